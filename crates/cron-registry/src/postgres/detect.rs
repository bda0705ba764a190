//! Finding pg_cron (and its version) in the cron database, and naming this
//! registry's jobs there.

use sqlx::PgPool;

use super::db::pg_cron_error;
use crate::error::{Error, Result};
use crate::schedule::PgCronVersion;

/// Longest accepted job prefix: with up to 20 digits of a registry id the
/// pg_cron name stays within PostgreSQL's 63-byte `name`, which pg_cron 1.4
/// would otherwise cut (and two cut names could collide).
pub(super) const MAX_PREFIX_LEN: usize = 43;

/// The pg_cron version in the database `pool` is connected to, or `None`
/// if pg_cron is not installed there.
pub(super) async fn detect(pool: &PgPool) -> Result<Option<PgCronVersion>> {
    let row: Option<(String, Option<String>, String)> = sqlx::query_as(
        "SELECT e.extversion, current_setting('cron.database_name', true), current_database()
         FROM pg_extension e WHERE e.extname = 'pg_cron'",
    )
    .fetch_optional(pool)
    .await
    .map_err(pg_cron_error("detect pg_cron"))?;
    let Some((extversion, cron_database, current)) = row else {
        return Ok(None);
    };
    // The extension can only be created in cron.database_name; if the
    // setting has since moved, its launcher no longer reads these jobs.
    if let Some(cron_database) = cron_database.filter(|d| d != &current) {
        return Err(Error::PgCronUnavailable(format!(
            "the cron pool is connected to database {current:?} but cron.database_name is {cron_database:?}"
        )));
    }
    PgCronVersion::parse(&extversion).map(Some).ok_or_else(|| {
        Error::PgCronUnavailable(format!("unrecognised pg_cron version {extversion:?}"))
    })
}

/// The default job prefix for application database `database`: readable
/// when the name is short, a stable hash of it otherwise (sqlx test
/// databases have 63-byte names). Distinct databases get distinct
/// prefixes, so parallel test databases never share a pg_cron job name.
pub(super) fn default_prefix(database: &str) -> String {
    let readable = database.len() <= 30
        && database
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if readable {
        format!("opsdeck:{database}:")
    } else {
        format!("opsdeck:{:016x}:", fnv1a64(database.as_bytes()))
    }
}

/// FNV-1a: stable across releases and platforms, unlike std's hasher.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Checks a configured prefix: 1–43 bytes of `[A-Za-z0-9_.:-]`.
pub(super) fn check_prefix(prefix: &str) -> Result<()> {
    let ok = !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX_LEN
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "job prefix {prefix:?} must be 1-{MAX_PREFIX_LEN} bytes of A-Z, a-z, 0-9, '_', '.', ':', '-'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_fit_and_differ() {
        assert_eq!(default_prefix("app"), "opsdeck:app:");
        let a = default_prefix("_sqlx_test_fEz8UEpxQE5pDcQc5twuSa7_Lozh7vlEIQRBsr12vwQKyQg_Nr3V");
        let b = default_prefix("_sqlx_test_fEz8UEpxQE5pDcQc5twuSa7_Lozh7vlEIQRBsr12vwQKyQg_Nr3W");
        assert_ne!(a, b);
        for p in [&a, &b, &default_prefix(&"x".repeat(30))] {
            assert!(p.len() <= MAX_PREFIX_LEN, "{p}");
            check_prefix(p).unwrap();
            assert!(format!("{p}{}", i64::MAX).len() <= 63);
        }
        assert!(check_prefix("").is_err());
        assert!(check_prefix("bad prefix").is_err());
        assert!(check_prefix(&"x".repeat(44)).is_err());
    }
}
