//! Test support for fault experiments (feature `testing`): private
//! PostgreSQL clusters ([`PrivatePostgres`], also as a streaming replica),
//! private Redis servers ([`PrivateRedis`]) and a loopback TCP proxy that can
//! cut a service off ([`TcpProxy`]).
//!
//! Every service runs on its own free port under a scratch directory of its
//! own, so tests never touch the shared services (PostgreSQL on 5432, Redis
//! on 6379) and can stop, restart, freeze (`SIGSTOP`) and thaw (`SIGCONT`)
//! what they started. Only processes these helpers started are signalled,
//! by PID. Each helper removes its service in `Drop`, which also runs when
//! a test panics; a test process killed outright leaves its directory
//! behind, and the next helper of the same kind removes it (and stops its
//! processes) once the owning process is gone.
//!
//! A missing tool (`initdb`, `redis-server`, …) is [`Error::MissingTool`];
//! [`or_skip`] turns it into a skip with a message, except under CI
//! ([`in_ci`]), where a test must fail rather than pass without running.

mod postgres;
mod process;
mod proxy;
mod redis;

pub use postgres::PrivatePostgres;
pub use proxy::TcpProxy;
pub use redis::PrivateRedis;

use std::net::{Ipv4Addr, TcpListener};

/// Why a private service could not be set up or controlled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A program the helper needs is not installed.
    #[error("{tool} is not installed ({hint})")]
    MissingTool {
        /// The program.
        tool: &'static str,
        /// Where it was looked for, or how to install it.
        hint: String,
    },
    /// A command ran but failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// What was being done.
        what: String,
        /// The exit status and the end of the command's output or log.
        detail: String,
    },
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A service did not become ready in time.
    #[error("timed out: {0}")]
    Timeout(String),
}

impl Error {
    /// Whether the error only says that a tool is not installed (a test may
    /// skip on it outside CI).
    pub fn is_missing_tool(&self) -> bool {
        matches!(self, Error::MissingTool { .. })
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

/// Whether the tests run under CI (`CI=true` or `CI=1`), where a missing
/// service or tool must fail a test instead of skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picked it).
/// Another process may take it before the caller binds it; the helpers
/// retry with a new port when a service cannot bind.
pub fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// The value of `result`, or `None` after printing why the test is skipped
/// when a tool is missing outside CI.
///
/// # Panics
///
/// On any other error, and on a missing tool under CI ([`in_ci`]): the test
/// fails with the error.
pub fn or_skip<T>(result: Result<T, Error>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(error) if error.is_missing_tool() && !in_ci() => {
            eprintln!("SKIPPED: {error} (under CI=true this fails the test)");
            None
        }
        Err(error) => panic!("test service setup failed: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_can_be_bound() {
        let port = free_port().unwrap();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    }

    #[test]
    fn a_missing_tool_is_recognised() {
        let missing = Error::MissingTool {
            tool: "initdb",
            hint: "apt-get install postgresql-15".into(),
        };
        assert!(missing.is_missing_tool());
        assert!(missing.to_string().contains("initdb"));
        let failed = Error::Timeout("x".into());
        assert!(!failed.is_missing_tool());
        assert_eq!(or_skip::<u8>(Ok(3)), Some(3));
    }

    #[test]
    #[should_panic(expected = "test service setup failed")]
    fn other_errors_fail_the_test() {
        or_skip::<()>(Err(Error::Timeout("never ready".into())));
    }
}
