//! The validated configuration of a `cloister-host` run.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::supervisor::RestartPolicy;

/// How the enclave is launched.
///
/// An unknown name is an error, never a fallback: running a simulated enclave where a real one
/// was asked for would be a silent downgrade (clients would still refuse it, but late).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// `cloister-enclave` as a child process with the simulated platform (development, tests).
    Sim,
}

impl Backend {
    /// Every backend name, for help and error messages.
    pub const NAMES: &'static [&'static str] = &["sim"];
}

impl FromStr for Backend {
    type Err = UnknownBackend;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sim" => Ok(Backend::Sim),
            other => Err(UnknownBackend(other.to_owned())),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sim => "sim",
        })
    }
}

/// A backend name that is not known.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown backend `{0}` (known: sim; snp-qemu is not implemented yet)")]
pub struct UnknownBackend(pub String);

/// Everything `cloister-host` needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The enclave program (`cloister-enclave`).
    pub enclave_bin: PathBuf,
    /// The enclave's measured configuration, handed over unchanged.
    pub enclave_config: PathBuf,
    /// The sealed models to serve (at least one).
    pub sealed_models: Vec<PathBuf>,
    /// The public relay address (port 0: any free port).
    pub listen: SocketAddr,
    /// How to launch the enclave.
    pub backend: Backend,
    /// Where to record every byte the host relays or serves, if anywhere.
    pub record: Option<PathBuf>,
    /// When to restart the enclave.
    pub restart: RestartPolicy,
}

/// A configuration that cannot work; reported as a usage error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A path that must name a regular file does not.
    #[error("{flag} {}: not a file", path.display())]
    NotAFile {
        /// The command-line flag.
        flag: &'static str,
        /// The path given.
        path: PathBuf,
    },
    /// No sealed model was given.
    #[error("at least one --sealed-model is required")]
    NoModels,
}

impl Config {
    /// Checks what can be checked before starting (file contents are checked by [`crate::run`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        is_file("--enclave-bin", &self.enclave_bin)?;
        is_file("--enclave-config", &self.enclave_config)?;
        if self.sealed_models.is_empty() {
            return Err(ConfigError::NoModels);
        }
        for path in &self.sealed_models {
            is_file("--sealed-model", path)?;
        }
        Ok(())
    }
}

fn is_file(flag: &'static str, path: &Path) -> Result<(), ConfigError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(ConfigError::NotAFile {
            flag,
            path: path.to_owned(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn backend_names() {
        assert_eq!("sim".parse::<Backend>().unwrap(), Backend::Sim);
        assert_eq!(Backend::Sim.to_string(), "sim");
        for bad in ["snp-qemu", "SIM", "", "cloud"] {
            assert!(bad.parse::<Backend>().is_err(), "{bad}");
        }
    }
}
