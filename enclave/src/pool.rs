//! Where tract runs: a fixed set of inference threads, and the memory budget runs are admitted against.
//!
//! Why a pool of our own rather than tokio's blocking pool: tract runs one request on one thread, so more
//! threads than cores only adds contention, and each thread that ever ran a request keeps a glibc malloc
//! arena holding that request's freed memory (a 64-client burst on 32 blocking threads left the enclave at
//! 650–730 MB idle). With exactly `inference_threads` threads, concurrency is what the cores can run, the
//! arenas are as many, and what they retain is bounded by the memory budget.
//!
//! Admission ([`MemoryBudget`]): a request's peak memory is estimated from the plan for its shapes before it
//! runs (`cloister_inference::Footprint`). A request that can never fit is refused at once; one that does not
//! fit now waits for memory, then for a thread, up to the configured deadline; the waiting is a queue, not a
//! refusal.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Why a job did not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// No thread (or not enough memory) became free before the deadline.
    #[error("the enclave is busy: no inference capacity became free within {0:?}")]
    Busy(Duration),
    /// The request needs more memory than the whole budget: it can never run.
    #[error("this request needs an estimated {needed} bytes of memory; the enclave's budget is {budget} bytes")]
    NeverFits {
        /// The estimate.
        needed: u64,
        /// The budget.
        budget: u64,
    },
    /// The job panicked or its thread is gone.
    #[error("the inference thread failed")]
    Failed,
}

/// A fixed number of threads that run jobs in arrival order.
pub struct InferencePool {
    jobs: Mutex<SyncSender<Job>>,
    threads: Arc<Semaphore>,
    size: usize,
}

impl std::fmt::Debug for InferencePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferencePool")
            .field("threads", &self.size)
            .finish_non_exhaustive()
    }
}

impl InferencePool {
    /// Starts `threads` threads (0: one per core the process may run on).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let size = if threads == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            threads
        };
        // Bounded: a job is sent only with a thread permit, and the permit lives until the job ends, so at most
        // `size` jobs are ever queued or running.
        let (sender, receiver) = sync_channel::<Job>(size);
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..size {
            let receiver = Arc::clone(&receiver);
            std::thread::Builder::new()
                .name(format!("inference-{i}"))
                .spawn(move || worker(&receiver))?;
        }
        Ok(InferencePool {
            jobs: Mutex::new(sender),
            threads: Arc::new(Semaphore::new(size)),
            size,
        })
    }

    /// The number of threads.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Runs `job` on a pool thread once one is free, waiting at most until `deadline`.
    ///
    /// The thread permit is moved into the job and released when the job ends, not when the caller stops
    /// waiting: a client that disconnects mid-request cancels the waiting future, and if the permit were
    /// released then, another job would start while this one still runs (a way past both the thread count
    /// and the memory budget). A job whose caller is gone before it starts is skipped.
    pub async fn run<T: Send + 'static>(
        &self,
        deadline: Instant,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let waited = deadline.saturating_duration_since(Instant::now());
        let permit = tokio::time::timeout_at(deadline, Arc::clone(&self.threads).acquire_owned())
            .await
            .map_err(|_| PoolError::Busy(waited))?
            .map_err(|_| PoolError::Failed)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let boxed: Job = Box::new(move || {
            let _permit = permit;
            if tx.is_closed() {
                return;
            }
            let _ = tx.send(job());
        });
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .try_send(boxed)
            .map_err(|e| match e {
                // Cannot happen while permits bound the queue; refusing is the safe answer if it does.
                TrySendError::Full(_) | TrySendError::Disconnected(_) => PoolError::Failed,
            })?;
        rx.await.map_err(|_| PoolError::Failed)
    }
}

fn worker(receiver: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let guard = receiver.lock().unwrap_or_else(PoisonError::into_inner);
            match guard.recv() {
                Ok(job) => job,
                Err(_) => return, // the pool is gone
            }
        };
        // A panic in a job must not end the thread: the pool would shrink. The job's result channel is
        // dropped with it, and the waiting request sees `PoolError::Failed`.
        let _ = catch_unwind(AssertUnwindSafe(job));
    }
}

/// The memory that runs in progress may use together, in KiB units of a semaphore.
#[derive(Debug)]
pub struct MemoryBudget {
    units: Arc<Semaphore>,
    bytes: u64,
}

/// Memory held by one admitted run; released when dropped.
#[derive(Debug)]
pub struct MemoryGrant {
    permit: Option<OwnedSemaphorePermit>,
}

impl MemoryGrant {
    /// Adds `other`'s memory to this grant (both are released together).
    pub fn merge(&mut self, other: MemoryGrant) {
        match (&mut self.permit, other.permit) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (None, theirs) => self.permit = theirs,
            (Some(_), None) => {}
        }
    }

    /// The bytes held (whole units).
    pub fn bytes(&self) -> u64 {
        self.permit
            .as_ref()
            .map_or(0, |p| p.num_permits() as u64 * UNIT)
    }
}

const UNIT: u64 = 1024;

impl MemoryBudget {
    /// A budget of `bytes` (at least one unit; at most what a semaphore can count).
    pub fn new(bytes: u64) -> Self {
        let units = (bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS as u64);
        MemoryBudget {
            units: Arc::new(Semaphore::new(units as usize)),
            bytes: units * UNIT,
        }
    }

    /// The budget in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Grows `grant` to `needed` bytes in all (it never shrinks), waiting until `deadline` for the difference:
    /// [`PoolError::NeverFits`] at once when the whole budget is smaller than `needed`.
    pub async fn grow(
        &self,
        grant: &mut MemoryGrant,
        needed: u64,
        deadline: Instant,
    ) -> Result<(), PoolError> {
        if needed > self.bytes {
            return Err(PoolError::NeverFits {
                needed,
                budget: self.bytes,
            });
        }
        let more = self
            .admit(needed.saturating_sub(grant.bytes()), deadline)
            .await?;
        grant.merge(more);
        Ok(())
    }

    /// Reserves `needed` bytes, waiting until `deadline` for them: [`PoolError::NeverFits`] at once when the
    /// whole budget is smaller, [`PoolError::Busy`] if they did not become free in time.
    pub async fn admit(&self, needed: u64, deadline: Instant) -> Result<MemoryGrant, PoolError> {
        if needed > self.bytes {
            return Err(PoolError::NeverFits {
                needed,
                budget: self.bytes,
            });
        }
        let units = needed.div_ceil(UNIT);
        if units == 0 {
            return Ok(MemoryGrant { permit: None });
        }
        // units <= budget units <= MAX_PERMITS < u32::MAX on every target we build for.
        let units = u32::try_from(units).map_err(|_| PoolError::NeverFits {
            needed,
            budget: self.bytes,
        })?;
        let waited = deadline.saturating_duration_since(Instant::now());
        let permit =
            tokio::time::timeout_at(deadline, Arc::clone(&self.units).acquire_many_owned(units))
                .await
                .map_err(|_| PoolError::Busy(waited))?
                .map_err(|_| PoolError::Failed)?;
        Ok(MemoryGrant {
            permit: Some(permit),
        })
    }
}

/// The default budget: half of the memory this process can use (its cgroup's limit, or the machine's
/// memory, whichever is smaller). Half, because the models, their plans and the request bodies live
/// outside the budget.
pub fn default_budget_bytes() -> u64 {
    visible_memory_bytes().map_or(1 << 30, |m| m / 2)
}

/// The smaller of the cgroup memory limits that apply to this process and MemTotal, if any can be read.
pub fn visible_memory_bytes() -> Option<u64> {
    let mem_total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|kb| kb.saturating_mul(1024))
    });
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let cgroup = cgroup_limit(&own, |p| std::fs::read_to_string(p).ok());
    match (mem_total, cgroup) {
        (Some(m), Some(c)) => Some(m.min(c)),
        (m, c) => m.or(c),
    }
}

/// The tightest memory limit on the way from this process's cgroup up to the root: a limit on any ancestor
/// applies too, and a container usually sits in a nested cgroup whose own `memory.max` may be "max" while its
/// parent's is not. `proc_self_cgroup` is `/proc/self/cgroup`; `read` reads a control file.
fn cgroup_limit(proc_self_cgroup: &str, read: impl Fn(&str) -> Option<String>) -> Option<u64> {
    let parse = |t: Option<String>| t.and_then(|t| t.trim().parse::<u64>().ok());
    let mut limits = Vec::new();
    for line in proc_self_cgroup.lines() {
        // v2: "0::/path"; v1: "N:memory:/path" (or with other controllers listed with it).
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (base, file) = if controllers.is_empty() {
            ("/sys/fs/cgroup", "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            ("/sys/fs/cgroup/memory", "memory.limit_in_bytes")
        } else {
            continue;
        };
        let mut dir = path.trim_end_matches('/').to_owned();
        loop {
            limits.extend(parse(read(&format!("{base}{dir}/{file}"))));
            match dir.rfind('/') {
                Some(i) => dir.truncate(i),
                None => break,
            }
            if dir.is_empty() {
                limits.extend(parse(read(&format!("{base}/{file}"))));
                break;
            }
        }
    }
    limits.into_iter().min()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::mpsc::channel;

    use super::*;

    #[test]
    fn the_tightest_limit_on_the_way_to_the_root_applies() {
        let files = |p: &str| -> Option<String> {
            match p {
                "/sys/fs/cgroup/kubepods/pod1/c1/memory.max" => Some("max\n".into()),
                "/sys/fs/cgroup/kubepods/pod1/memory.max" => Some("2147483648\n".into()),
                "/sys/fs/cgroup/kubepods/memory.max" => Some("8589934592\n".into()),
                "/sys/fs/cgroup/memory/docker/x/memory.limit_in_bytes" => Some("1073741824".into()),
                _ => None,
            }
        };
        assert_eq!(cgroup_limit("0::/kubepods/pod1/c1\n", files), Some(2 << 30));
        assert_eq!(
            cgroup_limit("5:cpu,cpuacct:/docker/x\n4:memory:/docker/x\n", files),
            Some(1 << 30)
        );
        assert_eq!(cgroup_limit("0::/\n", files), None);
        assert_eq!(cgroup_limit("garbage", files), None);
    }

    #[tokio::test]
    async fn a_cancelled_caller_keeps_its_thread_until_the_job_ends() {
        let pool = Arc::new(InferencePool::new(1).unwrap());
        let long = Instant::now() + Duration::from_secs(5);
        let (started_tx, started_rx) = channel();
        let (release_tx, release_rx) = channel::<()>();
        let p = Arc::clone(&pool);
        let abandoned = tokio::spawn(async move {
            p.run(long, move || {
                started_tx.send(()).unwrap();
                let _ = release_rx.recv_timeout(Duration::from_secs(5));
            })
            .await
        });
        tokio::task::spawn_blocking(move || started_rx.recv().unwrap())
            .await
            .unwrap();
        // The client goes away: its future is dropped while the job still runs.
        abandoned.abort();
        let _ = abandoned.await;
        // The only thread is still taken: another job must wait, not start beside the running one.
        let short = Instant::now() + Duration::from_millis(150);
        assert!(matches!(
            pool.run(short, || ()).await,
            Err(PoolError::Busy(_))
        ));
        release_tx.send(()).unwrap();
        assert_eq!(pool.run(long, || 7).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn pool_runs_jobs_and_survives_a_panic() {
        let pool = InferencePool::new(2).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(pool.run(deadline, || 41 + 1).await.unwrap(), 42);
        let failed = pool.run(deadline, || -> u8 { panic!("boom") }).await;
        assert!(matches!(failed, Err(PoolError::Failed)));
        // Both threads still serve.
        let (a, b) = tokio::join!(pool.run(deadline, || 1), pool.run(deadline, || 2));
        assert_eq!((a.unwrap(), b.unwrap()), (1, 2));
    }

    #[tokio::test]
    async fn a_busy_pool_refuses_after_the_deadline() {
        let pool = Arc::new(InferencePool::new(1).unwrap());
        let long = Instant::now() + Duration::from_secs(5);
        let (started_tx, started_rx) = channel();
        let p = Arc::clone(&pool);
        let blocker = tokio::spawn(async move {
            p.run(long, move || {
                started_tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(600));
            })
            .await
        });
        tokio::task::spawn_blocking(move || started_rx.recv().unwrap())
            .await
            .unwrap();
        let short = Instant::now() + Duration::from_millis(100);
        assert!(matches!(
            pool.run(short, || ()).await,
            Err(PoolError::Busy(_))
        ));
        blocker.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn memory_is_admitted_queued_or_refused() {
        let budget = MemoryBudget::new(10 * 1024 * 1024);
        let soon = || Instant::now() + Duration::from_millis(100);
        assert!(matches!(
            budget.admit(11 * 1024 * 1024, soon()).await,
            Err(PoolError::NeverFits { .. })
        ));
        let a = budget.admit(6 * 1024 * 1024, soon()).await.unwrap();
        // 6 + 6 > 10: the second waits, and gives up at its deadline ...
        assert!(matches!(
            budget.admit(6 * 1024 * 1024, soon()).await,
            Err(PoolError::Busy(_))
        ));
        // ... or gets in once the first is released.
        let later = Instant::now() + Duration::from_secs(5);
        let waiter = budget.admit(6 * 1024 * 1024, later);
        let release = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(a);
        };
        let (granted, ()) = tokio::join!(waiter, release);
        granted.unwrap();
        budget.admit(0, soon()).await.unwrap();
    }

    #[test]
    fn visible_memory_is_read() {
        assert!(visible_memory_bytes().is_some_and(|m| m > 0));
        assert!(default_budget_bytes() > 0);
    }
}
