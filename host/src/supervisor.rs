//! Keeps one enclave running: launches it, publishes its address, restarts it with backoff.
//!
//! Restart policy ([`RestartPolicy`]): after a stop, wait 200 ms, doubling per consecutive stop up
//! to 5 s; an instance that stayed up for 30 s resets the delay and the count of consecutive
//! restarts. With a maximum (`--restart-max N`), the supervisor gives up when the enclave stops
//! for the N+1-th time in a row. A launch that fails (the enclave exits or times out before it
//! announces its address) counts as a stop with zero uptime; a program that cannot be started at
//! all ends the supervisor at once.
//!
//! The host is untrusted and this is availability only: a restarted enclave starts from its
//! measured image again, re-attests to the key broker, and clients attest it again.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::launcher::{Instance, LaunchError, Launcher, ShowStatus, Stopped};

/// When and how often to restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Delay before the first restart after a stable run.
    pub initial_backoff: Duration,
    /// Largest delay.
    pub max_backoff: Duration,
    /// Uptime after which the delay and the consecutive-restart count start over.
    pub reset_after: Duration,
    /// Consecutive restarts allowed before giving up; `None` for no limit.
    pub max_restarts: Option<u32>,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            reset_after: Duration::from_secs(30),
            max_restarts: None,
        }
    }
}

/// What to do after the enclave stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Restart after `after`; this is consecutive restart number `attempt` (from 1).
    Restart {
        /// Delay before the restart.
        after: Duration,
        /// Consecutive restart number.
        attempt: u32,
    },
    /// The limit is reached: `restarts` consecutive restarts were made already.
    GiveUp {
        /// Restarts made before giving up.
        restarts: u32,
    },
}

/// The backoff state machine (sans-IO).
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: RestartPolicy,
    next: Duration,
    consecutive: u32,
}

impl Backoff {
    /// A fresh state.
    pub fn new(policy: RestartPolicy) -> Self {
        Self {
            policy,
            next: policy.initial_backoff,
            consecutive: 0,
        }
    }

    /// The enclave stopped after running for `uptime` (zero if it never came up).
    pub fn on_stop(&mut self, uptime: Duration) -> Decision {
        if uptime >= self.policy.reset_after {
            self.next = self.policy.initial_backoff;
            self.consecutive = 0;
        }
        if let Some(max) = self.policy.max_restarts {
            if self.consecutive >= max {
                return Decision::GiveUp {
                    restarts: self.consecutive,
                };
            }
        }
        self.consecutive = self.consecutive.saturating_add(1);
        let after = self.next;
        self.next = self
            .next
            .saturating_mul(2)
            .min(self.policy.max_backoff)
            .max(self.policy.initial_backoff);
        Decision::Restart {
            after,
            attempt: self.consecutive,
        }
    }
}

/// The current enclave address, as published by the supervisor: `None` while no enclave is up.
#[derive(Debug, Clone)]
pub struct EnclaveAddr {
    rx: watch::Receiver<Option<SocketAddr>>,
}

impl EnclaveAddr {
    /// A fixed address (an enclave the host does not launch, or a test).
    pub fn fixed(addr: Option<SocketAddr>) -> Self {
        let (_tx, rx) = watch::channel(addr);
        Self { rx }
    }

    /// Wraps a receiver whose sender publishes addresses (tests).
    #[cfg(test)]
    pub(crate) fn from_receiver(rx: watch::Receiver<Option<SocketAddr>>) -> Self {
        Self { rx }
    }

    /// The address now.
    pub fn current(&self) -> Option<SocketAddr> {
        *self.rx.borrow()
    }

    /// Waits until an enclave is up and returns its address; `None` if the supervisor is gone
    /// and none is.
    pub async fn wait_up(&mut self) -> Option<SocketAddr> {
        match self.rx.wait_for(Option::is_some).await {
            Ok(addr) => *addr,
            Err(_) => None,
        }
    }
}

/// Why the supervisor ended with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisorError {
    /// The enclave program cannot be started at all.
    #[error("cannot launch the enclave")]
    Launch(#[source] LaunchError),
    /// The enclave kept stopping and the restart limit was reached.
    #[error("the enclave stopped after {restarts} consecutive restart(s) (--restart-max {restarts}); giving up")]
    GaveUp {
        /// Consecutive restarts made.
        restarts: u32,
        /// The last stop.
        #[source]
        last: Stopped,
    },
}

/// Runs one enclave with a [`Launcher`] and keeps it running.
#[derive(Debug)]
pub struct Supervisor<L> {
    launcher: L,
    policy: RestartPolicy,
    publish: watch::Sender<Option<SocketAddr>>,
}

impl<L: Launcher> Supervisor<L> {
    /// A supervisor and the address it publishes.
    pub fn new(launcher: L, policy: RestartPolicy) -> (Self, EnclaveAddr) {
        let (publish, rx) = watch::channel(None);
        (
            Self {
                launcher,
                policy,
                publish,
            },
            EnclaveAddr { rx },
        )
    }

    /// Launches, supervises and restarts until `shutdown` resolves (then stops the enclave and
    /// returns `Ok`) or the enclave cannot be kept up (then returns the error).
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), SupervisorError> {
        tokio::pin!(shutdown);
        let mut backoff = Backoff::new(self.policy);
        let mut first = true;
        loop {
            // Dropping an unfinished launch kills its child (kill_on_drop).
            let launched = tokio::select! {
                () = &mut shutdown => return Ok(()),
                launched = self.launcher.launch() => launched,
            };
            let (stopped, uptime) = match launched {
                Ok(mut instance) => {
                    let up_since = Instant::now();
                    crate::metrics::metrics().enclave_started(first);
                    first = false;
                    self.publish.send_replace(Some(instance.addr()));
                    let stopped = tokio::select! {
                        () = &mut shutdown => {
                            self.publish.send_replace(None);
                            instance.terminate().await;
                            tracing::info!("enclave stopped for shutdown");
                            return Ok(());
                        }
                        stopped = instance.stopped() => stopped,
                    };
                    crate::metrics::metrics().enclave_stopped();
                    self.publish.send_replace(None);
                    (stopped, up_since.elapsed())
                }
                Err(e) if e.is_fatal() => return Err(SupervisorError::Launch(e)),
                Err(e) => (Stopped::LaunchFailed(e), Duration::ZERO),
            };
            match backoff.on_stop(uptime) {
                Decision::GiveUp { restarts } => {
                    tracing::error!(reason = %ShowStatus(&stopped), ?uptime, restarts, "enclave stopped; restart limit reached");
                    return Err(SupervisorError::GaveUp {
                        restarts,
                        last: stopped,
                    });
                }
                Decision::Restart { after, attempt } => {
                    tracing::warn!(reason = %ShowStatus(&stopped), ?uptime, attempt, backoff = ?after, "enclave stopped; restarting");
                    tokio::select! {
                        () = &mut shutdown => return Ok(()),
                        () = tokio::time::sleep(after) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::launcher::SimLauncher;
    use std::ffi::OsString;
    use std::path::Path;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let mut b = Backoff::new(RestartPolicy::default());
        let delays: Vec<_> = (0..8)
            .map(|_| match b.on_stop(Duration::ZERO) {
                Decision::Restart { after, .. } => after,
                d => panic!("{d:?}"),
            })
            .collect();
        assert_eq!(
            delays,
            [200, 400, 800, 1600, 3200, 5000, 5000, 5000].map(ms)
        );
        // 29 s up is not stable yet; 30 s is.
        assert!(matches!(
            b.on_stop(Duration::from_secs(29)),
            Decision::Restart { after, attempt: 9 } if after == ms(5000)
        ));
        assert_eq!(
            b.on_stop(Duration::from_secs(30)),
            Decision::Restart {
                after: ms(200),
                attempt: 1
            }
        );
    }

    #[test]
    fn backoff_gives_up_after_max_consecutive_restarts() {
        let policy = RestartPolicy {
            max_restarts: Some(2),
            ..RestartPolicy::default()
        };
        let mut b = Backoff::new(policy);
        assert!(matches!(
            b.on_stop(Duration::ZERO),
            Decision::Restart { attempt: 1, .. }
        ));
        assert!(matches!(
            b.on_stop(Duration::ZERO),
            Decision::Restart { attempt: 2, .. }
        ));
        // A stable run in between resets the count.
        assert!(matches!(
            b.on_stop(Duration::from_secs(31)),
            Decision::Restart { attempt: 1, .. }
        ));
        assert!(matches!(
            b.on_stop(Duration::ZERO),
            Decision::Restart { attempt: 2, .. }
        ));
        assert_eq!(b.on_stop(Duration::ZERO), Decision::GiveUp { restarts: 2 });

        let mut never = Backoff::new(RestartPolicy {
            max_restarts: Some(0),
            ..policy
        });
        assert_eq!(
            never.on_stop(Duration::ZERO),
            Decision::GiveUp { restarts: 0 }
        );
    }

    fn fake(script: &str) -> SimLauncher {
        SimLauncher::new(
            Path::new("cloister-enclave"),
            Path::new("enclave.toml"),
            "http://b",
        )
        .with_wrapper(
            Path::new("/bin/sh"),
            &[
                OsString::from("-c"),
                OsString::from(script),
                OsString::from("fake-enclave"),
            ],
        )
        .with_start_timeout(Duration::from_secs(5))
    }

    fn fast(max_restarts: Option<u32>) -> RestartPolicy {
        RestartPolicy {
            initial_backoff: ms(20),
            max_backoff: ms(100),
            reset_after: Duration::from_secs(30),
            max_restarts,
        }
    }

    fn count_lines(path: &Path) -> usize {
        std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
    }

    #[tokio::test]
    async fn restarts_a_crashing_enclave_with_backoff_then_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("launches");
        // Announces, then crashes shortly after.
        let script = format!(
            "echo x >> '{}'; echo 'cloister-enclave: listening on 127.0.0.1:7'; sleep 0.05; exit 3",
            log.display()
        );
        let (supervisor, mut addr) = Supervisor::new(fake(&script), fast(Some(3)));
        let started = Instant::now();
        let task = tokio::spawn(supervisor.run(std::future::pending()));
        assert_eq!(addr.wait_up().await, Some("127.0.0.1:7".parse().unwrap()));
        let result = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        let elapsed = started.elapsed();
        match result {
            Err(SupervisorError::GaveUp {
                restarts: 3,
                last: Stopped::Exited(status),
            }) => assert_eq!(status.code(), Some(3)),
            other => panic!("{other:?}"),
        }
        assert_eq!(count_lines(&log), 4, "one launch and three restarts");
        // Backoff 20 + 40 + 80 ms between the launches.
        assert!(elapsed >= ms(140), "{elapsed:?}");
        assert_eq!(addr.current(), None);
    }

    #[tokio::test]
    async fn failed_launches_count_as_stops() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("launches");
        let script = format!("echo x >> '{}'; exit 1", log.display());
        let (supervisor, addr) = Supervisor::new(fake(&script), fast(Some(1)));
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            supervisor.run(std::future::pending()),
        )
        .await
        .unwrap();
        assert!(
            matches!(
                result,
                Err(SupervisorError::GaveUp {
                    restarts: 1,
                    last: Stopped::LaunchFailed(LaunchError::ExitedEarly(_))
                })
            ),
            "{result:?}"
        );
        assert_eq!(count_lines(&log), 2);
        assert_eq!(addr.current(), None);
    }

    #[tokio::test]
    async fn a_missing_program_ends_the_supervisor_at_once() {
        let launcher = SimLauncher::new(
            Path::new("/nonexistent/cloister-enclave"),
            Path::new("enclave.toml"),
            "http://b",
        );
        let (supervisor, _addr) = Supervisor::new(launcher, fast(None));
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            supervisor.run(std::future::pending()),
        )
        .await
        .unwrap();
        assert!(
            matches!(result, Err(SupervisorError::Launch(_))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn shutdown_kills_the_enclave() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        // `exec` so that the pid written is the pid of the process that keeps running.
        let script = format!(
            "echo $$ > '{}'; echo 'cloister-enclave: listening on 127.0.0.1:8'; exec sleep 60",
            pid_file.display()
        );
        let (supervisor, mut addr) = Supervisor::new(fake(&script), fast(None));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(supervisor.run(async {
            let _ = stopped.await;
        }));
        assert!(addr.wait_up().await.is_some());
        let pid = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .to_owned();
        stop.send(()).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(addr.current(), None);
        // The process is gone (killed and reaped).
        let alive = std::process::Command::new("kill")
            .args(["-0", &pid])
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(!alive, "enclave process {pid} still running");
    }
}
