//! [`PgCronVersion`]: which pg_cron release's schedule syntax applies.

use std::fmt;

/// A pg_cron release, as far as schedule syntax goes (`major.minor`).
///
/// Parsed from `pg_extension.extversion`, which Debian reports as e.g.
/// `1.4-1` for the 1.4.2 library: only the leading `major.minor` counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PgCronVersion {
    major: u16,
    minor: u16,
}

impl PgCronVersion {
    /// pg_cron 1.4 (Debian bookworm): 5-field cron and `@` aliases only.
    pub const V1_4: Self = Self::new(1, 4);
    /// pg_cron 1.5 added `N seconds` interval schedules.
    pub const V1_5: Self = Self::new(1, 5);
    /// pg_cron 1.6 added `$` (last day of the month).
    pub const V1_6: Self = Self::new(1, 6);

    /// A version from its parts.
    pub const fn new(major: u16, minor: u16) -> Self {
        PgCronVersion { major, minor }
    }

    /// Parses `major.minor` from the start of an extension version string
    /// (`1.4`, `1.4-1`, `1.6.4`); `None` if it does not start that way.
    pub fn parse(extversion: &str) -> Option<Self> {
        let mut parts = extversion.trim().split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Some(PgCronVersion { major, minor })
    }

    /// Whether `N seconds` schedules are understood.
    pub fn supports_seconds(self) -> bool {
        self >= Self::V1_5
    }

    /// Whether `$` (last day of the month) is understood.
    pub fn supports_last_day(self) -> bool {
        self >= Self::V1_6
    }
}

impl fmt::Display for PgCronVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}
