use std::collections::HashSet;
use std::time::Duration;

use opsdeck_core::{ModelRef, OperationId, Snippet, UserId};
use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::ids::ExecutionId;
use crate::limits::{MAX_BATCH, MAX_COST, MAX_LATENCY_MS, MAX_TOKENS};
use crate::money::Money;

/// Why an execution failed, e.g. `timeout` or `rate_limited`: 1–64
/// characters of `[a-z0-9_.-]` (the rule of operation ids), so kinds group
/// cleanly in reports.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ErrorKind(Box<str>);

impl ErrorKind {
    /// The kind used when a failure does not say why.
    pub const UNKNOWN: &'static str = "unknown";

    /// Parses an error kind; see the type's documentation for the rule.
    pub fn parse(s: &str) -> Result<Self> {
        // Same alphabet and length as an operation id; reuse its parser.
        OperationId::parse(s)
            .map(|_| ErrorKind(s.into()))
            .map_err(|_| {
                Error::invalid(
                    "error_kind",
                    format!(
                        "{:?} must be 1-64 characters of a-z, 0-9, '_', '.', '-'",
                        Snippet::new(s)
                    ),
                )
            })
    }

    /// The kind as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

opsdeck_core::text_id!(ErrorKind, Error);

/// How an execution ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It produced its result.
    Success,
    /// It failed, for this reason.
    Failure(ErrorKind),
}

/// One execution of an operation, as recorded.
///
/// Numbers are signed so that bad input (a negative cost from a buggy
/// client) can be represented and refused with a typed error rather than
/// wrapped around; the repositories validate every execution against
/// [`MAX_TOKENS`], [`MAX_COST`], [`MAX_LATENCY_MS`] and the clock before
/// writing anything.
///
/// ```
/// use opsdeck_analytics::{Execution, Money};
/// use opsdeck_core::UserId;
/// let run = Execution::new(
///     UserId::random(),
///     "summarize".parse().unwrap(),
///     "anthropic/claude-sonnet-4".parse().unwrap(),
///     time::OffsetDateTime::now_utc(),
/// )
/// .tokens(1_200, 300)
/// .cost(Money::from_micros(4_500))
/// .latency_ms(850);
/// assert!(run.is_success());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Execution {
    /// Idempotency key: recording the same (user, id) twice counts once.
    pub execution_id: ExecutionId,
    /// The owner.
    pub user_id: UserId,
    /// The operation that ran.
    pub operation_id: OperationId,
    /// The model it ran on.
    pub model: ModelRef,
    /// Prompt tokens.
    pub input_tokens: i64,
    /// Completion tokens.
    pub output_tokens: i64,
    /// What it cost.
    pub cost: Money,
    /// Wall-clock duration in milliseconds.
    pub latency_ms: i64,
    /// Success or the kind of failure.
    pub outcome: Outcome,
    /// When it ran; its UTC date is the rollup day.
    pub executed_at: OffsetDateTime,
}

impl Execution {
    /// A successful execution with a random id and zero tokens, cost and
    /// latency; chain the setters for the rest.
    pub fn new(
        user_id: UserId,
        operation_id: OperationId,
        model: ModelRef,
        executed_at: OffsetDateTime,
    ) -> Self {
        Execution {
            execution_id: ExecutionId::random(),
            user_id,
            operation_id,
            model,
            input_tokens: 0,
            output_tokens: 0,
            cost: Money::ZERO,
            latency_ms: 0,
            outcome: Outcome::Success,
            executed_at,
        }
    }

    /// Sets the id.
    pub fn id(mut self, execution_id: ExecutionId) -> Self {
        self.execution_id = execution_id;
        self
    }

    /// Sets input and output tokens.
    pub fn tokens(mut self, input: i64, output: i64) -> Self {
        self.input_tokens = input;
        self.output_tokens = output;
        self
    }

    /// Sets the cost.
    pub fn cost(mut self, cost: Money) -> Self {
        self.cost = cost;
        self
    }

    /// Sets the latency.
    pub fn latency_ms(mut self, latency_ms: i64) -> Self {
        self.latency_ms = latency_ms;
        self
    }

    /// Marks it failed with `kind`.
    pub fn failed(mut self, kind: ErrorKind) -> Self {
        self.outcome = Outcome::Failure(kind);
        self
    }

    /// Whether it succeeded.
    pub fn is_success(&self) -> bool {
        matches!(self.outcome, Outcome::Success)
    }

    /// The failure kind, if it failed.
    pub fn error_kind(&self) -> Option<&ErrorKind> {
        match &self.outcome {
            Outcome::Success => None,
            Outcome::Failure(kind) => Some(kind),
        }
    }

    /// The rollup day: the UTC date of `executed_at`.
    pub fn day(&self) -> Date {
        self.executed_at.to_offset(time::UtcOffset::UTC).date()
    }

    /// Checks the numbers and the time against the limits; `now` and
    /// `future_tolerance` bound `executed_at` (clocks disagree a little).
    pub fn validate(&self, now: OffsetDateTime, future_tolerance: Duration) -> Result<()> {
        for (field, value) in [
            ("input_tokens", self.input_tokens),
            ("output_tokens", self.output_tokens),
        ] {
            if !(0..=MAX_TOKENS).contains(&value) {
                return Err(Error::invalid(
                    field,
                    format!("{value} is outside 0..={MAX_TOKENS}"),
                ));
            }
        }
        if self.cost.is_negative() || self.cost.micros() > MAX_COST.micros() {
            return Err(Error::invalid(
                "cost",
                format!("{} is outside $0..={MAX_COST}", self.cost),
            ));
        }
        if !(0..=MAX_LATENCY_MS).contains(&self.latency_ms) {
            return Err(Error::invalid(
                "latency_ms",
                format!("{} is outside 0..={MAX_LATENCY_MS}", self.latency_ms),
            ));
        }
        // A huge configured tolerance saturates instead of overflowing.
        let latest = now
            .checked_add(time::Duration::try_from(future_tolerance).unwrap_or(time::Duration::MAX))
            .unwrap_or(OffsetDateTime::new_utc(
                time::Date::MAX,
                time::Time::MIDNIGHT,
            ));
        if self.executed_at > latest {
            return Err(Error::invalid(
                "executed_at",
                format!(
                    "{} is more than {}s in the future",
                    self.executed_at,
                    future_tolerance.as_secs()
                ),
            ));
        }
        Ok(())
    }
}

/// An execution as a client sends it (JSON): raw strings and numbers.
/// [`ExecutionRecord::parse`] turns it into an [`Execution`] or a
/// [`Error::Validation`] naming the bad field.
///
/// ```
/// use opsdeck_analytics::ExecutionRecord;
/// let raw: ExecutionRecord = serde_json::from_str(r#"{
///     "execution_id": "6f1f3f4e-9a38-4f8e-9d6c-0d4e2d1c7b10",
///     "user_id": "0b6f8a8e-0c9e-4d6e-8f9e-5a1b2c3d4e5f",
///     "operation_id": "summarize",
///     "model": "anthropic/claude-sonnet-4",
///     "input_tokens": 1200, "output_tokens": 300,
///     "cost_micros": 4500, "latency_ms": 850,
///     "success": true,
///     "executed_at": "2026-01-05T10:00:00Z"
/// }"#).unwrap();
/// let execution = raw.parse().unwrap();
/// assert_eq!(execution.cost.micros(), 4_500);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    /// The caller's id for the execution (required: it is the retry key).
    pub execution_id: Uuid,
    /// The owner.
    pub user_id: UserId,
    /// Operation id as given.
    pub operation_id: String,
    /// Model reference as given (`provider/model`).
    pub model: String,
    /// Prompt tokens.
    pub input_tokens: i64,
    /// Completion tokens.
    pub output_tokens: i64,
    /// Cost in micro-dollars.
    pub cost_micros: i64,
    /// Duration in milliseconds.
    pub latency_ms: i64,
    /// Whether it succeeded.
    pub success: bool,
    /// Why it failed (`unknown` when a failure gives none); must be absent
    /// for a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// When it ran (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub executed_at: OffsetDateTime,
}

impl ExecutionRecord {
    /// Parses the strings into typed values. Numbers and time are checked
    /// when recording ([`Execution::validate`]).
    pub fn parse(self) -> Result<Execution> {
        let operation_id = OperationId::parse(&self.operation_id)
            .map_err(|e| Error::invalid("operation_id", e.to_string()))?;
        let model =
            ModelRef::parse(&self.model).map_err(|e| Error::invalid("model", e.to_string()))?;
        let outcome = match (self.success, self.error_kind.as_deref()) {
            (true, None) => Outcome::Success,
            (true, Some(kind)) => {
                return Err(Error::invalid(
                    "error_kind",
                    format!(
                        "a successful execution has no error kind (got {:?})",
                        Snippet::new(kind)
                    ),
                ));
            }
            (false, kind) => {
                Outcome::Failure(ErrorKind::parse(kind.unwrap_or(ErrorKind::UNKNOWN))?)
            }
        };
        Ok(Execution {
            execution_id: ExecutionId::from(self.execution_id),
            user_id: self.user_id,
            operation_id,
            model,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cost: Money::from_micros(self.cost_micros),
            latency_ms: self.latency_ms,
            outcome,
            executed_at: self.executed_at,
        })
    }
}

/// [`ExecutionRecord::parse`], so that the service's recording methods take
/// raw records and typed executions alike (`impl TryInto<Execution>`).
impl TryFrom<ExecutionRecord> for Execution {
    type Error = Error;
    fn try_from(record: ExecutionRecord) -> Result<Self> {
        record.parse()
    }
}

/// What a batch write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordSummary {
    /// Executions in the batch as given.
    pub received: usize,
    /// Executions recorded for the first time.
    pub recorded: u64,
    /// Executions already recorded before, or repeated within the batch.
    pub duplicates: u64,
}

impl RecordSummary {
    pub(crate) fn new(received: usize, recorded: u64) -> Self {
        RecordSummary {
            received,
            recorded,
            duplicates: (received as u64).saturating_sub(recorded),
        }
    }
}

/// Validates a whole batch (size first, then every execution with
/// [`Execution::validate`] and the backend's `check`, reporting the first
/// bad one with its position) and drops repeated (user, id) pairs, the
/// first occurrence winning, as the SQL function does. Nothing is written
/// unless this succeeds.
pub(crate) fn prepare_batch(
    executions: Vec<Execution>,
    now: OffsetDateTime,
    future_tolerance: Duration,
    check: impl Fn(&Execution) -> Result<()>,
) -> Result<Vec<Execution>> {
    if executions.len() > MAX_BATCH {
        return Err(Error::BatchTooLarge {
            len: executions.len(),
            max: MAX_BATCH,
        });
    }
    let mut seen = HashSet::with_capacity(executions.len());
    let mut unique = Vec::with_capacity(executions.len());
    for (index, execution) in executions.into_iter().enumerate() {
        execution
            .validate(now, future_tolerance)
            .and_then(|()| check(&execution))
            .map_err(|e| e.at_item(index))?;
        if seen.insert((execution.user_id, execution.execution_id)) {
            unique.push(execution);
        }
    }
    Ok(unique)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ExecutionRecord {
        ExecutionRecord {
            execution_id: Uuid::new_v4(),
            user_id: UserId::random(),
            operation_id: "summarize".into(),
            model: "anthropic/claude-sonnet-4".into(),
            input_tokens: 10,
            output_tokens: 5,
            cost_micros: 100,
            latency_ms: 20,
            success: true,
            error_kind: None,
            executed_at: OffsetDateTime::now_utc(),
        }
    }

    #[test]
    fn parse_names_the_bad_field() {
        let field = |r: ExecutionRecord| match r.parse() {
            Err(Error::Validation(v)) => v.field,
            other => panic!("expected a validation error, got {other:?}"),
        };
        assert_eq!(
            field(ExecutionRecord {
                model: "no-slash".into(),
                ..record()
            }),
            "model"
        );
        assert_eq!(
            field(ExecutionRecord {
                operation_id: "Bad Op".into(),
                ..record()
            }),
            "operation_id"
        );
        assert_eq!(
            field(ExecutionRecord {
                error_kind: Some("timeout".into()),
                ..record()
            }),
            "error_kind"
        );
        assert_eq!(
            field(ExecutionRecord {
                success: false,
                error_kind: Some("Time Out".into()),
                ..record()
            }),
            "error_kind"
        );
        let failed = ExecutionRecord {
            success: false,
            ..record()
        }
        .parse()
        .unwrap();
        assert_eq!(failed.error_kind().map(ErrorKind::as_str), Some("unknown"));
    }

    #[test]
    fn validate_checks_every_limit() {
        let now = OffsetDateTime::now_utc();
        let ok = record().parse().unwrap();
        let tolerance = Duration::from_secs(300);
        assert!(ok.validate(now, tolerance).is_ok());
        let field = |e: Execution| match e.validate(now, tolerance) {
            Err(Error::Validation(v)) => v.field,
            other => panic!("expected a validation error, got {other:?}"),
        };
        assert_eq!(field(ok.clone().tokens(-1, 0)), "input_tokens");
        assert_eq!(field(ok.clone().tokens(0, MAX_TOKENS + 1)), "output_tokens");
        assert_eq!(field(ok.clone().cost(Money::from_micros(-1))), "cost");
        assert_eq!(
            field(ok.clone().cost(MAX_COST + Money::from_micros(1))),
            "cost"
        );
        assert_eq!(field(ok.clone().latency_ms(-5)), "latency_ms");
        let mut future = ok.clone();
        future.executed_at = now + Duration::from_secs(301);
        assert_eq!(field(future), "executed_at");
        let mut within = ok;
        within.executed_at = now + Duration::from_secs(299);
        assert!(within.validate(now, tolerance).is_ok());
    }

    #[test]
    fn batches_are_checked_whole_and_deduplicated() {
        let now = OffsetDateTime::now_utc();
        let tolerance = Duration::from_secs(300);
        let a = record().parse().unwrap();
        let mut a_again = a.clone();
        a_again.input_tokens = 999; // first occurrence wins
        let b = record().parse().unwrap();
        let unique = prepare_batch(vec![a.clone(), a_again, b.clone()], now, tolerance, |_| {
            Ok(())
        })
        .unwrap();
        assert_eq!(unique, vec![a.clone(), b]);

        let err = prepare_batch(
            vec![a.clone(), a.clone().cost(Money::from_micros(-1))],
            now,
            tolerance,
            |_| Ok(()),
        )
        .unwrap_err();
        assert!(
            matches!(
                &err,
                Error::Validation(v) if v.item == Some(1) && v.field == "cost"
            ),
            "{err:?}"
        );
        let err = prepare_batch(vec![a; MAX_BATCH + 1], now, tolerance, |_| Ok(())).unwrap_err();
        assert!(matches!(err, Error::BatchTooLarge { len, .. } if len == MAX_BATCH + 1));
    }
}
