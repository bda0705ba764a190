//! Values that must never print: [`Secret`] bytes and [`SecretUrl`]s.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Secret bytes. `Debug` and `Display` print `[redacted]`; the bytes are
/// zeroized when the value is dropped. There is deliberately no `PartialEq`:
/// comparing secrets with `==` would not be constant-time.
#[derive(Clone)]
pub struct Secret {
    bytes: Vec<u8>,
}

impl Secret {
    /// Wraps secret bytes. Taking a `Vec` (or `String`) moves the buffer in
    /// without a copy that would be left behind unwiped.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret {
            bytes: bytes.into(),
        }
    }

    /// The secret bytes. Keep what you derive from them short-lived.
    pub fn expose(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether the secret has no bytes.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret::new(value.as_bytes())
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Vec::zeroize wipes the whole capacity, not only the length.
        self.bytes.zeroize();
    }
}

impl ZeroizeOnDrop for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A connection URL (`postgres://…`, `redis://…`, `rediss://…`) that may
/// carry a password. `Debug` and `Display` show it with the password (in the
/// user-info part or in a `password=` query parameter) replaced by `***`, so
/// a configuration can be logged; [`SecretUrl::expose`] gives the real text
/// to the driver. The text is zeroized on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps a URL. Nothing is validated here: the driver that connects
    /// reports a malformed URL, and its error is what the caller needs.
    pub fn new(url: impl Into<String>) -> Self {
        SecretUrl(url.into())
    }

    /// The URL as given, password included. Hand it to the driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with every password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl Drop for SecretUrl {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl From<String> for SecretUrl {
    fn from(url: String) -> Self {
        SecretUrl::new(url)
    }
}

impl From<&String> for SecretUrl {
    fn from(url: &String) -> Self {
        SecretUrl::new(url.as_str())
    }
}

impl From<&str> for SecretUrl {
    fn from(url: &str) -> Self {
        SecretUrl::new(url)
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({:?})", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Query parameters that carry credentials in libpq and redis-rs URLs.
const SECRET_PARAMS: &[&str] = &["password", "sslpassword", "pass"];

/// `scheme://user:password@host/db?password=…` → `scheme://user:***@host/db?password=***`.
/// Written by hand (no URL parser) because the input need not be a valid URL:
/// whatever it is, nothing after a `user:` and before the last `@` of the
/// authority may print.
fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push_str(":***");
                }
                // `redis://token@host`: a lone user-info may itself be the secret.
                None if scheme.starts_with("redis") => out.push_str("***"),
                None => out.push_str(userinfo),
            }
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    let (path, query) = match tail.find('?') {
        Some(q) => tail.split_at(q),
        None => (tail, ""),
    };
    out.push_str(path);
    if let Some(query) = query.strip_prefix('?') {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((key, _)) if SECRET_PARAMS.contains(&key.to_ascii_lowercase().as_str()) => {
                    out.push_str(key);
                    out.push_str("=***");
                }
                _ => out.push_str(pair),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::from("hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
        assert_eq!(s.expose(), b"hunter2");
    }

    #[test]
    fn urls_print_without_passwords() {
        for (url, shown) in [
            (
                "postgres://u:hunter2@db.example:5432/app?sslmode=require",
                "postgres://u:***@db.example:5432/app?sslmode=require",
            ),
            (
                "redis://:hunter2@127.0.0.1:6379/0",
                "redis://:***@127.0.0.1:6379/0",
            ),
            (
                "rediss://hunter2@cache.example",
                "rediss://***@cache.example",
            ),
            (
                "postgres://db/app?user=u&password=hunter2",
                "postgres://db/app?user=u&password=***",
            ),
            ("postgres://u@db/app", "postgres://u@db/app"),
            ("u:hunter2@odd", "u:***@odd"),
            ("", ""),
        ] {
            let secret = SecretUrl::new(url);
            assert_eq!(secret.to_string(), shown);
            assert!(!format!("{secret:?}").contains("hunter2"));
            assert_eq!(secret.expose(), url);
        }
    }
}
