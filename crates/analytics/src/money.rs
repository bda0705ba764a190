use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Sub};
use std::str::FromStr;

use opsdeck_core::Snippet;
use serde::{Deserialize, Serialize};

/// An exact amount of US dollars, held as integer micro-dollars
/// (1 USD = 1 000 000 micros), stored as `BIGINT`.
///
/// Floating point never touches money here: sums, differences and
/// per-success averages are integer arithmetic. Arithmetic saturates at
/// about ±9.2 trillion dollars instead of wrapping; validated executions
/// (at most [`crate::MAX_COST`] each) cannot get near that.
///
/// ```
/// use opsdeck_analytics::Money;
/// let cost: Money = "0.0025".parse().unwrap();
/// assert_eq!(cost.micros(), 2_500);
/// assert_eq!((cost + Money::from_micros(500)).to_string(), "$0.003000");
/// assert!("0.0000001".parse::<Money>().is_err(), "below one micro-dollar");
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Money(i64);

impl Money {
    /// No money.
    pub const ZERO: Money = Money(0);
    /// Micro-dollars in one dollar.
    pub const MICROS_PER_DOLLAR: i64 = 1_000_000;

    /// An amount in micro-dollars.
    pub const fn from_micros(micros: i64) -> Self {
        Money(micros)
    }

    /// Whole dollars; `None` if the amount does not fit.
    pub const fn from_dollars(dollars: i64) -> Option<Self> {
        match dollars.checked_mul(Self::MICROS_PER_DOLLAR) {
            Some(micros) => Some(Money(micros)),
            None => None,
        }
    }

    /// The amount in micro-dollars.
    pub const fn micros(self) -> i64 {
        self.0
    }

    /// Whether the amount is below zero.
    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// The amount divided by `n`, rounded half away from zero; `None` when
    /// `n` is zero (e.g. cost per success with no success).
    pub fn div_round(self, n: i64) -> Option<Money> {
        if n == 0 {
            return None;
        }
        // i128 so that doubling for the rounding cannot overflow.
        let (num, den) = (i128::from(self.0) * 2, i128::from(n) * 2);
        let half = i128::from(n).abs();
        let rounded = if (num < 0) == (den < 0) {
            (num.abs() + half) / den.abs()
        } else {
            -((num.abs() + half) / den.abs())
        };
        Some(Money(saturate(rounded)))
    }
}

fn saturate(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

impl Add for Money {
    type Output = Money;
    fn add(self, other: Money) -> Money {
        Money(self.0.saturating_add(other.0))
    }
}

impl AddAssign for Money {
    fn add_assign(&mut self, other: Money) {
        *self = *self + other;
    }
}

impl Sub for Money {
    type Output = Money;
    fn sub(self, other: Money) -> Money {
        Money(self.0.saturating_sub(other.0))
    }
}

impl Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        iter.fold(Money::ZERO, Add::add)
    }
}

/// `$1.500000`, `-$0.000001`: always six decimals, so the text is exact.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let per = Self::MICROS_PER_DOLLAR.unsigned_abs();
        write!(f, "{sign}${}.{:06}", abs / per, abs % per)
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Money({self})")
    }
}

/// Why a text is not an amount of money.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid amount of money {input:?}: {reason}")]
pub struct ParseMoneyError {
    input: Snippet,
    reason: &'static str,
}

/// Parses a decimal dollar amount such as `12`, `0.25`, `-3.000001` or
/// `$1.5`, exactly: more than six decimals is an error, not a rounding.
impl FromStr for Money {
    type Err = ParseMoneyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = |reason| ParseMoneyError {
            input: Snippet::new(s),
            reason,
        };
        let (negative, rest) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let rest = rest.strip_prefix('$').unwrap_or(rest);
        let (whole, fraction) = rest.split_once('.').unwrap_or((rest, ""));
        if whole.is_empty() && fraction.is_empty() {
            return Err(error("expected digits"));
        }
        if !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
        {
            return Err(error("expected a decimal number such as 12.50"));
        }
        if fraction.len() > 6 {
            return Err(error(
                "more than six decimals (finer than one micro-dollar)",
            ));
        }
        // i128 so that the most negative amount, whose magnitude exceeds
        // i64::MAX, still parses; too many digits fail the final conversion.
        if whole.len() > 20 {
            return Err(error("too large"));
        }
        let whole: i128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| error("too large"))?
        };
        let fraction_micros: i128 = format!("{fraction:0<6}")
            .parse()
            .map_err(|_| error("expected digits"))?;
        let magnitude = whole * i128::from(Self::MICROS_PER_DOLLAR) + fraction_micros;
        let micros = if negative { -magnitude } else { magnitude };
        i64::try_from(micros)
            .map(Money)
            .map_err(|_| error("too large"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_exact_decimals() {
        for (text, micros) in [
            ("0", 0),
            ("12", 12_000_000),
            ("0.25", 250_000),
            (".5", 500_000),
            ("$1.5", 1_500_000),
            ("-3.000001", -3_000_001),
            ("0.000001", 1),
        ] {
            assert_eq!(text.parse::<Money>().unwrap().micros(), micros, "{text}");
        }
        for bad in [
            "",
            "-",
            ".",
            "1.0000001",
            "1e3",
            "1,5",
            "abc",
            "99999999999999999",
        ] {
            assert!(bad.parse::<Money>().is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn divides_with_rounding() {
        let m = Money::from_micros(10);
        assert_eq!(m.div_round(3), Some(Money::from_micros(3)));
        assert_eq!(m.div_round(4), Some(Money::from_micros(3)), "2.5 rounds up");
        assert_eq!(
            Money::from_micros(-10).div_round(4),
            Some(Money::from_micros(-3))
        );
        assert_eq!(m.div_round(0), None);
    }

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        let max = Money::from_micros(i64::MAX);
        assert_eq!(max + Money::from_micros(1), max);
        let min = Money::from_micros(i64::MIN);
        assert_eq!(min - Money::from_micros(1), min);
    }

    proptest! {
        #[test]
        fn display_parses_back(micros in any::<i64>()) {
            let money = Money::from_micros(micros);
            prop_assert_eq!(money.to_string().parse::<Money>().ok(), Some(money));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<Money>();
        }
    }
}
