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
use std::sync::mpsc::{channel, Receiver, Sender};
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
    jobs: Mutex<Sender<Job>>,
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
        let (sender, receiver) = channel::<Job>();
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
            let _ = tx.send(job());
        });
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(boxed)
            .map_err(|_| PoolError::Failed)?;
        let out = rx.await.map_err(|_| PoolError::Failed);
        drop(permit);
        out
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
    _permit: Option<OwnedSemaphorePermit>,
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
            return Ok(MemoryGrant { _permit: None });
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
            _permit: Some(permit),
        })
    }
}

/// The default budget: half of the memory this process can use (its cgroup's limit, or the machine's
/// memory, whichever is smaller). Half, because the models, their plans and the request bodies live
/// outside the budget.
pub fn default_budget_bytes() -> u64 {
    visible_memory_bytes().map_or(1 << 30, |m| m / 2)
}

/// The smaller of the cgroup v2 (or v1) memory limit and MemTotal, if any can be read.
pub fn visible_memory_bytes() -> Option<u64> {
    let mem_total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|kb| kb.saturating_mul(1024))
    });
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|p| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
    });
    match (mem_total, cgroup) {
        (Some(m), Some(c)) => Some(m.min(c)),
        (m, c) => m.or(c),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
