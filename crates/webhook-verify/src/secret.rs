//! Where secrets come from.
//!
//! A [`Secret`] (from `opsdeck_core`) never prints and is wiped from memory
//! when dropped. A [`SecretSource`] loads one at run time: from an
//! environment variable ([`EnvSecret`]), a file ([`FileSecret`], e.g. a
//! mounted Kubernetes secret) or 1Password ([`OnePasswordSecret`], through
//! the `op` CLI). A [`crate::KeyRing`] caches what the sources return and
//! reloads it, so a rotated secret is picked up without a restart.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use opsdeck_core::Secret;
use tokio::process::Command;
use zeroize::Zeroize;

/// Why a secret or key could not be loaded. Messages name the source (a
/// variable, path or `op://` reference), never secret material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The environment variable is not set.
    #[error("environment variable {var} is not set")]
    MissingEnv {
        /// The variable's name.
        var: String,
    },
    /// The environment variable is not valid Unicode.
    #[error("environment variable {var} is not valid Unicode")]
    NotUnicode {
        /// The variable's name.
        var: String,
    },
    /// The source returned nothing; an empty HMAC key would let anyone sign.
    #[error("secret from {source_name} is empty")]
    Empty {
        /// Where the secret came from.
        source_name: String,
    },
    /// Reading a secret file failed.
    #[error("cannot read secret file {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The 1Password CLI is not installed (or not at the configured path).
    #[error(
        "1Password CLI `{program}` not found; install it (https://developer.1password.com/docs/cli) or configure its path"
    )]
    OpMissing {
        /// The program that was looked for.
        program: String,
    },
    /// The 1Password CLI ran but failed (not signed in, no such item, …).
    #[error("1Password CLI failed for {reference} ({status}): {stderr}")]
    OpFailed {
        /// The `op://` reference.
        reference: String,
        /// The exit status.
        status: String,
        /// The start of its error output.
        stderr: String,
    },
    /// A source did not answer in time.
    #[error("loading {source_name} timed out after {after:?}")]
    Timeout {
        /// Where the secret was to come from.
        source_name: String,
        /// The configured timeout.
        after: Duration,
    },
    /// Starting or talking to a helper process failed.
    #[error("cannot run {program}")]
    Process {
        /// The program.
        program: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A 1Password reference was not of the form `op://vault/item/field`.
    #[error("invalid 1Password reference {reference:?}: expected op://vault/item/field")]
    InvalidReference {
        /// The refused reference.
        reference: String,
    },
    /// The secret loaded but is not a valid key for the endpoint's scheme.
    #[error("key {key_id:?} is invalid: {reason}")]
    InvalidKey {
        /// The key's id in its key set.
        key_id: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A key set needs at least one key.
    #[error("a key set needs at least one key")]
    NoKeys,
}

/// Somewhere a secret can be loaded from at run time.
///
/// # Contract
/// - `load` returns the current secret, or a [`SecretError`] that names the
///   source but no secret material; it never returns an empty secret.
/// - `describe` names the source for logs (variable, path, reference).
#[async_trait]
pub trait SecretSource: Send + Sync + fmt::Debug {
    /// Loads the current value.
    async fn load(&self) -> Result<Secret, SecretError>;

    /// A printable name of the source, e.g. `env:STRIPE_WEBHOOK_SECRET`.
    fn describe(&self) -> String;
}

/// A fixed secret is its own source (tests, examples, secrets from
/// elsewhere).
#[async_trait]
impl SecretSource for Secret {
    async fn load(&self) -> Result<Secret, SecretError> {
        non_empty(self.clone(), || self.describe())
    }

    fn describe(&self) -> String {
        "inline secret".to_owned()
    }
}

fn non_empty(secret: Secret, describe: impl FnOnce() -> String) -> Result<Secret, SecretError> {
    if secret.is_empty() {
        Err(SecretError::Empty {
            source_name: describe(),
        })
    } else {
        Ok(secret)
    }
}

/// Files and `op` output end with a newline that is not part of the secret.
fn trim_trailing_whitespace(mut bytes: Vec<u8>) -> Secret {
    let len = bytes.trim_ascii_end().len();
    // Wipe the cut tail before it is lost to truncate.
    bytes[len..].zeroize();
    bytes.truncate(len);
    Secret::new(bytes)
}

/// The value of an environment variable, read at every load.
#[derive(Debug, Clone)]
pub struct EnvSecret {
    var: String,
}

impl EnvSecret {
    /// Reads `var` on each load.
    pub fn new(var: impl Into<String>) -> Self {
        EnvSecret { var: var.into() }
    }
}

#[async_trait]
impl SecretSource for EnvSecret {
    async fn load(&self) -> Result<Secret, SecretError> {
        let value = std::env::var(&self.var).map_err(|e| match e {
            std::env::VarError::NotPresent => SecretError::MissingEnv {
                var: self.var.clone(),
            },
            std::env::VarError::NotUnicode(_) => SecretError::NotUnicode {
                var: self.var.clone(),
            },
        })?;
        non_empty(Secret::from(value), || self.describe())
    }

    fn describe(&self) -> String {
        format!("env:{}", self.var)
    }
}

/// The contents of a file, trailing whitespace removed, read at every load
/// (so replacing the file rotates the secret).
#[derive(Debug, Clone)]
pub struct FileSecret {
    path: PathBuf,
}

impl FileSecret {
    /// Reads `path` on each load.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSecret { path: path.into() }
    }
}

#[async_trait]
impl SecretSource for FileSecret {
    async fn load(&self) -> Result<Secret, SecretError> {
        let bytes = tokio::fs::read(&self.path)
            .await
            .map_err(|source| SecretError::Io {
                path: self.path.clone(),
                source,
            })?;
        non_empty(trim_trailing_whitespace(bytes), || self.describe())
    }

    fn describe(&self) -> String {
        format!("file:{}", self.path.display())
    }
}

/// A secret read from 1Password with `op read op://vault/item/field`.
///
/// `op` must be signed in (e.g. `OP_SERVICE_ACCOUNT_TOKEN` in the
/// environment, which the child process inherits). A call that takes longer
/// than the timeout (default 10 s) is killed: a hung CLI must not hang
/// every webhook behind it.
#[derive(Debug, Clone)]
pub struct OnePasswordSecret {
    reference: String,
    program: PathBuf,
    timeout: Duration,
}

impl OnePasswordSecret {
    /// Default time allowed for one `op read`.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// A source for `reference`, which must start with `op://` (this also
    /// keeps it from being taken for a command-line option).
    pub fn new(reference: impl Into<String>) -> Result<Self, SecretError> {
        let reference = reference.into();
        let valid = reference
            .strip_prefix("op://")
            .is_some_and(|rest| rest.split('/').filter(|s| !s.is_empty()).count() >= 3);
        if !valid || reference.chars().any(char::is_control) {
            return Err(SecretError::InvalidReference { reference });
        }
        Ok(OnePasswordSecret {
            reference,
            program: PathBuf::from("op"),
            timeout: Self::DEFAULT_TIMEOUT,
        })
    }

    /// Runs this program instead of `op` from `PATH`.
    pub fn program(mut self, program: impl AsRef<Path>) -> Self {
        self.program = program.as_ref().to_path_buf();
        self
    }

    /// How long one `op read` may take.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

#[async_trait]
impl SecretSource for OnePasswordSecret {
    async fn load(&self) -> Result<Secret, SecretError> {
        let program = self.program.display().to_string();
        let child = Command::new(&self.program)
            .args(["read", "--no-newline", &self.reference])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            // Dropping the wait on timeout then kills the CLI.
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => SecretError::OpMissing {
                    program: program.clone(),
                },
                _ => SecretError::Process {
                    program: program.clone(),
                    source,
                },
            })?;
        let output = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| SecretError::Timeout {
                source_name: self.describe(),
                after: self.timeout,
            })?
            .map_err(|source| SecretError::Process { program, source })?;
        if !output.status.success() {
            let mut stdout = output.stdout;
            stdout.zeroize();
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(SecretError::OpFailed {
                reference: self.reference.clone(),
                status: output.status.to_string(),
                stderr: stderr.trim().chars().take(200).collect(),
            });
        }
        non_empty(trim_trailing_whitespace(output.stdout), || self.describe())
    }

    fn describe(&self) -> String {
        self.reference.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let secret = Secret::from("hunter2");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert!(!format!("{:#?}", vec![secret.clone()]).contains("hunter2"));
        assert_eq!(secret.expose(), b"hunter2");
    }

    #[test]
    fn trailing_newlines_are_not_part_of_the_secret() {
        assert_eq!(
            trim_trailing_whitespace(b"abc \r\n".to_vec()).expose(),
            b"abc"
        );
        assert_eq!(trim_trailing_whitespace(b" a b".to_vec()).expose(), b" a b");
    }

    #[test]
    fn references_must_be_op_urls() {
        assert!(OnePasswordSecret::new("op://vault/item/field").is_ok());
        for bad in [
            "--help",
            "vault/item/field",
            "op://vault/item",
            "op://v/i/f\n",
        ] {
            assert!(
                matches!(
                    OnePasswordSecret::new(bad),
                    Err(SecretError::InvalidReference { .. })
                ),
                "{bad:?}"
            );
        }
    }
}
