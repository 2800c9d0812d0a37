//! Launching the enclave: the [`Launcher`] and [`Instance`] traits and the `sim` backend.
//!
//! A backend starts one enclave instance and learns the address its TLS listener is bound to;
//! the [`crate::supervisor`] restarts it when it stops. The `sim` backend ([`SimLauncher`]) runs
//! `cloister-enclave` as a child process on this machine (docs/architecture.md, "Enclave
//! launch"). `snp-qemu` (a QEMU SEV-SNP guest) will be a second implementation of the same traits.
//!
//! The launch arguments are not measured and need not be: they only say where bytes flow. The
//! enclave's measured configuration is the file passed as `--config`, which the host hands over
//! unchanged (it cannot change it without changing the measurement verifiers see).

use std::ffi::OsString;
use std::fmt;
use std::future::Future;
use std::io::{self, Write};
use std::net::{AddrParseError, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The line the enclave prints on stdout once its TLS listener is bound, followed by the address.
pub const ANNOUNCEMENT_PREFIX: &str = "cloister-enclave: listening on ";

/// Prefix of the enclave's forwarded output lines on the host's stderr.
pub const FORWARD_PREFIX: &str = "[enclave] ";

/// Default time the enclave has to announce its address after it was started.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(120);

/// Parses one line of the enclave's stdout (without or with its line ending).
///
/// `None` if it is not the announcement; `Some(Err)` if it is but the address does not parse.
pub fn parse_announcement(line: &str) -> Option<Result<SocketAddr, AddrParseError>> {
    let line = line.trim_end_matches(['\n', '\r']);
    line.strip_prefix(ANNOUNCEMENT_PREFIX)
        .map(|addr| addr.trim().parse())
}

/// A way to start the enclave.
pub trait Launcher: Send + 'static {
    /// A running enclave.
    type Instance: Instance;

    /// Starts one enclave and waits until it announced its listening address.
    fn launch(&mut self) -> impl Future<Output = Result<Self::Instance, LaunchError>> + Send;
}

/// One running enclave.
pub trait Instance: Send {
    /// Where the enclave accepts TLS connections.
    fn addr(&self) -> SocketAddr;

    /// Resolves when the enclave stopped, with how it stopped. Cancel safe.
    fn stopped(&mut self) -> impl Future<Output = Stopped> + Send;

    /// Stops the enclave and waits until it is gone.
    fn terminate(&mut self) -> impl Future<Output = ()> + Send;
}

/// How an enclave stopped, or failed to start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Stopped {
    /// The process exited (`exit status: N`) or was killed by a signal (`signal: N (SIGxxx)`).
    #[error("the enclave stopped ({0})")]
    Exited(ExitStatus),
    /// Waiting for the process failed; it is considered gone.
    #[error("waiting for the enclave failed")]
    WaitFailed(#[source] io::Error),
    /// The enclave did not come up.
    #[error("the enclave did not start")]
    LaunchFailed(#[source] LaunchError),
}

/// Why an enclave did not come up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// The program could not be started at all (missing, not executable, ...). Not retried.
    #[error("cannot start {}", program.display())]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// It exited before it announced its address.
    #[error("it exited before announcing its address ({0})")]
    ExitedEarly(ExitStatus),
    /// It closed its stdout before it announced its address.
    #[error("it closed its stdout before announcing its address")]
    NoAnnouncement,
    /// It did not announce its address in time (it was killed).
    #[error("it did not announce its address within {0:?}")]
    Timeout(Duration),
    /// It announced an address that does not parse.
    #[error("it announced an invalid address: {line:?}")]
    BadAnnouncement {
        /// The line.
        line: String,
        /// The cause.
        #[source]
        source: AddrParseError,
    },
    /// Reading its output failed.
    #[error("reading its output failed")]
    Io(#[source] io::Error),
    /// It announced an address the launcher does not forward to (QEMU backends: the enclave
    /// must listen on the guest port the host forwards).
    #[error("it announced {announced}, but only port {expected_port} is forwarded")]
    UnexpectedAddress {
        /// The announced address.
        announced: SocketAddr,
        /// The port the launcher forwards.
        expected_port: u16,
    },
}

impl LaunchError {
    /// Whether retrying cannot help (the supervisor gives up at once).
    pub fn is_fatal(&self) -> bool {
        matches!(self, LaunchError::Spawn { .. })
    }
}

/// The `sim` backend: `cloister-enclave` as a child process on this machine.
///
/// Runs `ENCLAVE_BIN --config CONFIG --listen 127.0.0.1:0 --blobs URL --exit-on-stdin-eof` with its stdin
/// a pipe the host holds open (so the enclave dies with the host), reads
/// the announcement from its stdout, forwards every other stdout and stderr line to the host's
/// stderr prefixed `[enclave] `. The child is killed if its [`SimInstance`] is dropped.
#[derive(Debug, Clone)]
pub struct SimLauncher {
    program: PathBuf,
    prefix_args: Vec<OsString>,
    config: PathBuf,
    blobs_url: String,
    start_timeout: Duration,
    /// The simulated HOST_DATA when `config` is an initdata document.
    initdata_host_data: Option<[u8; 32]>,
}

impl SimLauncher {
    /// A launcher for `enclave_bin` with the measured configuration `config`, pointing the
    /// enclave at the blob service `blobs_url`.
    pub fn new(enclave_bin: &Path, config: &Path, blobs_url: &str) -> Self {
        Self {
            program: enclave_bin.to_owned(),
            prefix_args: Vec::new(),
            config: config.to_owned(),
            blobs_url: blobs_url.to_owned(),
            start_timeout: DEFAULT_START_TIMEOUT,
            initdata_host_data: None,
        }
    }

    /// The configuration is a Confidential Containers initdata document: the enclave gets
    /// `--config-from-initdata` instead of `--config`, and its simulated launch the document's digest as
    /// HOST_DATA (what Kata does with a pod's initdata annotation).
    pub fn with_initdata(mut self, document: &cloister_attestation::initdata::InitData) -> Self {
        self.initdata_host_data = Some(document.snp_host_data());
        self
    }

    /// Runs `program prefix_args...` followed by the enclave's arguments instead of the enclave
    /// binary itself: a wrapper (`taskset`, `valgrind`) or a test double (`sh -c SCRIPT`).
    pub fn with_wrapper(mut self, program: &Path, prefix_args: &[OsString]) -> Self {
        self.program = program.to_owned();
        self.prefix_args = prefix_args.to_vec();
        self
    }

    /// How long the enclave may take to announce its address (default
    /// [`DEFAULT_START_TIMEOUT`]: it may load and optimise a model first).
    pub fn with_start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    async fn launch_child(&self) -> Result<SimInstance, LaunchError> {
        let mut command = Command::new(&self.program);
        command.args(&self.prefix_args);
        match self.initdata_host_data {
            None => command.arg("--config").arg(&self.config),
            Some(host_data) => command
                .arg("--config-from-initdata")
                .arg(&self.config)
                .env("CLOISTER_SIM_HOST_DATA", hex::encode(host_data)),
        };
        let mut child = command
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--blobs")
            .arg(&self.blobs_url)
            // The enclave exits when this pipe closes: if the host dies, even by SIGKILL, its enclave
            // does not outlive it (no unsafe prctl needed).
            .arg("--exit-on-stdin-eof")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| LaunchError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        let pid = child.id();
        tracing::info!(pid, program = %self.program.display(), "enclave started");
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(forward_lines(stderr));
        }
        let Some(stdout) = child.stdout.take() else {
            return Err(LaunchError::NoAnnouncement);
        };
        let mut stdout = BufReader::new(stdout);
        let announced = tokio::time::timeout(self.start_timeout, read_announcement(&mut stdout));
        let outcome = match announced.await {
            Ok(Ok(addr)) => Ok(addr),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(LaunchError::Timeout(self.start_timeout)),
        };
        match outcome {
            Ok(addr) => {
                // Keep draining stdout so the enclave never blocks on a full pipe.
                let forwarder = tokio::spawn(forward_lines(stdout));
                tracing::info!(pid, %addr, "enclave is listening");
                let mut instance = ChildInstance::new(child, addr, "the enclave");
                instance.stdout_forwarder = Some(forwarder);
                Ok(instance)
            }
            Err(e) => Err(abandon(child, "the enclave", e, Duration::from_secs(1)).await),
        }
    }
}

impl Launcher for SimLauncher {
    type Instance = SimInstance;

    fn launch(&mut self) -> impl Future<Output = Result<SimInstance, LaunchError>> + Send {
        self.launch_child()
    }
}

/// A `cloister-enclave` child process.
pub type SimInstance = ChildInstance;

/// An enclave that runs in a child process of the host: the enclave itself (`sim`) or the VM that runs it
/// (QEMU backends). The child is killed if this is dropped.
#[derive(Debug)]
pub struct ChildInstance {
    child: Child,
    addr: SocketAddr,
    /// What the child is, for logs ("the enclave", "QEMU").
    what: &'static str,
    /// The child's stdin, if it is a pipe: open while this instance lives, closed when the host exits or
    /// dies. Held outside `child`: tokio's `Child::wait` closes the child's stdin before waiting, which
    /// would tell a `sim` enclave (`--exit-on-stdin-eof`) that the host is gone.
    _stdin: Option<ChildStdin>,
    /// The task that forwards the child's stdout (audit lines included): awaited at termination, so that
    /// the last lines (the audit log's signed `stop`) are stored before the host goes on.
    stdout_forwarder: Option<tokio::task::JoinHandle<()>>,
}

impl ChildInstance {
    /// The instance of `child`, which announced that the enclave listens on `addr`.
    pub(crate) fn new(mut child: Child, addr: SocketAddr, what: &'static str) -> Self {
        let stdin = child.stdin.take();
        Self {
            child,
            addr,
            what,
            _stdin: stdin,
            stdout_forwarder: None,
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

impl Instance for ChildInstance {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    async fn stopped(&mut self) -> Stopped {
        match self.child.wait().await {
            Ok(status) => Stopped::Exited(status),
            Err(e) => Stopped::WaitFailed(e),
        }
    }

    /// Closes the child's stdin first (an enclave started with `--exit-on-stdin-eof` seals its audit log
    /// with a signed `stop` and exits), waits up to [`STOP_GRACE`], then kills.
    async fn terminate(&mut self) {
        if self._stdin.take().is_some() {
            if let Ok(Ok(_)) = tokio::time::timeout(STOP_GRACE, self.child.wait()).await {
                if let Some(forwarder) = self.stdout_forwarder.take() {
                    let _ = tokio::time::timeout(Duration::from_secs(1), forwarder).await;
                }
                return;
            }
        }
        kill(&mut self.child, self.what).await;
    }
}

/// Disposes of a child whose launch failed with `error`, and says why it failed. A child that closed its
/// stdout before announcing usually exited: if it does within `grace`, its exit status is the reason
/// ([`LaunchError::ExitedEarly`]). Any other child is killed.
pub(crate) async fn abandon(
    mut child: Child,
    what: &'static str,
    error: LaunchError,
    grace: Duration,
) -> LaunchError {
    if matches!(error, LaunchError::NoAnnouncement) {
        if let Ok(Ok(status)) = tokio::time::timeout(grace, child.wait()).await {
            return LaunchError::ExitedEarly(status);
        }
    }
    kill(&mut child, what).await;
    error
}

/// How long an enclave gets to seal its audit log after its stdin closes.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// SIGKILL and reap. Keys and plaintext live only in the enclave's memory (a VM's guest memory, and under
/// SNP its key, go with QEMU), which the kernel discards; [`ChildInstance::terminate`] first gives the
/// enclave [`STOP_GRACE`] to seal its audit log.
async fn kill(child: &mut Child, what: &'static str) {
    if let Err(e) = child.kill().await {
        tracing::warn!(error = %e, "killing {what} failed");
    }
}

/// Reads stdout lines until the announcement; forwards the others.
async fn read_announcement(stdout: &mut BufReader<ChildStdout>) -> Result<SocketAddr, LaunchError> {
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = stdout
            .read_until(b'\n', &mut line)
            .await
            .map_err(LaunchError::Io)?;
        if n == 0 {
            return Err(LaunchError::NoAnnouncement);
        }
        let text = String::from_utf8_lossy(&line);
        match parse_announcement(&text) {
            Some(Ok(addr)) => return Ok(addr),
            Some(Err(source)) => {
                return Err(LaunchError::BadAnnouncement {
                    line: text.trim_end().to_owned(),
                    source,
                })
            }
            None => forward(&line),
        }
    }
}

/// Forwards every line of `reader` to stderr until EOF.
async fn forward_lines<R: AsyncRead + Unpin>(reader: R) {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => forward(&line),
        }
    }
}

fn forward(line: &[u8]) {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if crate::audit::take(line) {
        return;
    }
    let mut err = io::stderr().lock();
    let _ = err
        .write_all(FORWARD_PREFIX.as_bytes())
        .and_then(|()| err.write_all(line))
        .and_then(|()| err.write_all(b"\n"));
}

/// Shows a process exit the way the supervisor logs it.
#[derive(Debug)]
pub struct ShowStatus<'a>(pub &'a Stopped);

impl fmt::Display for ShowStatus<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Stopped::Exited(status) => write!(f, "{status}"),
            Stopped::WaitFailed(e) => write!(f, "wait failed: {e}"),
            Stopped::LaunchFailed(e) => {
                write!(f, "{e}")?;
                let mut source = std::error::Error::source(e);
                while let Some(cause) = source {
                    write!(f, ": {cause}")?;
                    source = cause.source();
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_announcement() {
        let addr: SocketAddr = "127.0.0.1:4433".parse().unwrap();
        assert_eq!(
            parse_announcement("cloister-enclave: listening on 127.0.0.1:4433\n"),
            Some(Ok(addr))
        );
        assert_eq!(
            parse_announcement("cloister-enclave: listening on 127.0.0.1:4433\r\n"),
            Some(Ok(addr))
        );
        assert_eq!(
            parse_announcement("cloister-enclave: listening on [::1]:5"),
            Some(Ok("[::1]:5".parse().unwrap()))
        );
        assert!(matches!(
            parse_announcement("cloister-enclave: listening on nowhere"),
            Some(Err(_))
        ));
        assert_eq!(parse_announcement("loading model"), None);
        assert_eq!(
            parse_announcement("x cloister-enclave: listening on 127.0.0.1:1"),
            None
        );
    }

    fn sh(script: &str) -> SimLauncher {
        SimLauncher::new(
            Path::new("cloister-enclave"),
            Path::new("enclave.toml"),
            "http://b",
        )
        .with_wrapper(
            Path::new("/bin/sh"),
            &["-c".into(), script.into(), "fake-enclave".into()],
        )
        .with_start_timeout(Duration::from_secs(5))
    }

    #[tokio::test]
    async fn sim_passes_the_contract_arguments_and_reads_the_address() {
        let dir = tempfile::tempdir().unwrap();
        let args = dir.path().join("args");
        let script = format!(
            "echo booting; echo \"$@\" > '{}'; echo 'cloister-enclave: listening on 127.0.0.1:9'; exec sleep 30",
            args.display()
        );
        let mut launcher = sh(&script);
        let mut instance = tokio::time::timeout(Duration::from_secs(10), launcher.launch())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(instance.addr(), "127.0.0.1:9".parse().unwrap());
        assert_eq!(
            std::fs::read_to_string(&args).unwrap().trim(),
            "--config enclave.toml --listen 127.0.0.1:0 --blobs http://b --exit-on-stdin-eof"
        );
        tokio::time::timeout(Duration::from_secs(5), instance.terminate())
            .await
            .unwrap();
        let stopped = instance.stopped().await;
        assert!(
            matches!(stopped, Stopped::Exited(s) if !s.success()),
            "{stopped:?}"
        );
    }

    #[tokio::test]
    async fn sim_reports_early_exit_timeouts_and_bad_lines() {
        let run = |script: &'static str, timeout: u64| async move {
            let mut launcher = sh(script).with_start_timeout(Duration::from_millis(timeout));
            tokio::time::timeout(Duration::from_secs(10), launcher.launch())
                .await
                .unwrap()
                .unwrap_err()
        };
        let e = run("echo oops >&2; exit 3", 5000).await;
        assert!(
            matches!(&e, LaunchError::ExitedEarly(s) if s.code() == Some(3)),
            "{e:?}"
        );
        assert!(!e.is_fatal());
        let e = run("exec sleep 30", 200).await;
        assert!(matches!(e, LaunchError::Timeout(_)), "{e:?}");
        let e = run(
            "echo 'cloister-enclave: listening on bogus'; exec sleep 30",
            5000,
        )
        .await;
        assert!(matches!(e, LaunchError::BadAnnouncement { .. }), "{e:?}");
    }

    #[tokio::test]
    async fn missing_binary_is_fatal() {
        let mut launcher = SimLauncher::new(
            Path::new("/nonexistent/cloister-enclave"),
            Path::new("enclave.toml"),
            "http://b",
        );
        let e = launcher.launch().await.unwrap_err();
        assert!(e.is_fatal(), "{e:?}");
    }
}
