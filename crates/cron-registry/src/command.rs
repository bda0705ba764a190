//! Typed job commands and their rendering to SQL.
//!
//! No caller-supplied string is ever pasted into SQL: values become quoted
//! literals ([`quote_literal`]) and identifiers come only from
//! [`FunctionName`], whose characters cannot end a quoted identifier.

use std::fmt;

use opsdeck_core::{OperationId, Snippet, UserId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::name::JobName;

/// Why a command (or one of its values) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// Text contained a NUL character, which PostgreSQL text cannot hold.
    #[error("{what} contains a NUL character")]
    Nul {
        /// Which value.
        what: &'static str,
    },
    /// A value was larger than allowed.
    #[error("{what} is {len} bytes; the maximum is {max}")]
    TooLarge {
        /// Which value.
        what: &'static str,
        /// Its size in bytes.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// Operation arguments were not a JSON object.
    #[error("operation arguments must be a JSON object")]
    NotAnObject,
    /// A function name was not `name` or `schema.name` of `[a-z_][a-z0-9_]*`.
    #[error(
        "function name {0:?} must be `name` or `schema.name`, each 1-63 characters of a-z, 0-9, '_' not starting with a digit"
    )]
    FunctionName(Snippet),
    /// A stored command could not be read back (kind unknown or arguments
    /// malformed).
    #[error("stored command of kind {kind:?} is invalid: {reason}")]
    Stored {
        /// The stored kind (cut to 80 characters).
        kind: Snippet,
        /// What is wrong.
        reason: String,
    },
}

/// Largest accepted text value or JSON argument object, in bytes.
pub const MAX_VALUE_BYTES: usize = 16 * 1024;

/// Most arguments of a [`JobCommand::CallFunction`].
pub const MAX_FUNCTION_ARGS: usize = 32;

/// Quotes `s` as a PostgreSQL string literal.
///
/// Single quotes are doubled. If `s` has a backslash, the literal is written
/// as `E'…'` with backslashes doubled too, so it means the same whether
/// `standard_conforming_strings` is on or off. NUL is refused: PostgreSQL
/// text cannot hold it and some drivers cut the statement there.
///
/// ```
/// use opsdeck_cron_registry::quote_literal;
///
/// assert_eq!(quote_literal("it's").unwrap(), "'it''s'");
/// assert_eq!(quote_literal(r"a\b").unwrap(), r"E'a\\b'");
/// assert!(quote_literal("nul\0").is_err());
/// ```
pub fn quote_literal(s: &str) -> Result<String, CommandError> {
    if s.contains('\0') {
        return Err(CommandError::Nul { what: "text" });
    }
    Ok(literal(s))
}

/// [`quote_literal`] for text already known to hold no NUL (every typed
/// value here checks that when built). A NUL could only come from a bug; it
/// is dropped rather than trusted, so the output is always one literal.
fn literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 3);
    if s.contains('\\') {
        out.push('E');
    }
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => {}
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Text for a SQL argument: any UTF-8 up to [`MAX_VALUE_BYTES`] without NUL.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SqlText(Box<str>);

impl SqlText {
    /// Checks `s` (no NUL, size limit), keeping its allocation.
    pub fn new(s: impl Into<String>) -> Result<Self, CommandError> {
        let s = s.into();
        if s.contains('\0') {
            return Err(CommandError::Nul { what: "text value" });
        }
        if s.len() > MAX_VALUE_BYTES {
            return Err(CommandError::TooLarge {
                what: "text value",
                len: s.len(),
                max: MAX_VALUE_BYTES,
            });
        }
        Ok(SqlText(s.into()))
    }

    /// Checks `s`; see [`SqlText::new`].
    pub fn parse(s: &str) -> Result<Self, CommandError> {
        Self::new(s)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

opsdeck_core::text_id!(SqlText, CommandError);

/// A JSON value safe to hand to PostgreSQL's `jsonb`: no NUL in any string
/// or key (`jsonb` refuses `\u0000`), at most [`MAX_VALUE_BYTES`] compact.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Value", into = "serde_json::Value")]
pub struct JsonValue(serde_json::Value);

impl JsonValue {
    /// Checks `value`.
    pub fn new(value: serde_json::Value) -> Result<Self, CommandError> {
        fn has_nul(v: &serde_json::Value) -> bool {
            match v {
                serde_json::Value::String(s) => s.contains('\0'),
                serde_json::Value::Array(items) => items.iter().any(has_nul),
                serde_json::Value::Object(map) => {
                    map.iter().any(|(k, v)| k.contains('\0') || has_nul(v))
                }
                _ => false,
            }
        }
        if has_nul(&value) {
            return Err(CommandError::Nul { what: "JSON value" });
        }
        let len = value.to_string().len();
        if len > MAX_VALUE_BYTES {
            return Err(CommandError::TooLarge {
                what: "JSON value",
                len,
                max: MAX_VALUE_BYTES,
            });
        }
        Ok(JsonValue(value))
    }

    /// An empty JSON object.
    pub fn empty_object() -> Self {
        JsonValue(serde_json::Value::Object(serde_json::Map::new()))
    }

    /// The value.
    pub fn as_value(&self) -> &serde_json::Value {
        &self.0
    }

    fn to_sql(&self) -> String {
        format!("{}::jsonb", literal(&self.0.to_string()))
    }
}

impl TryFrom<serde_json::Value> for JsonValue {
    type Error = CommandError;
    fn try_from(v: serde_json::Value) -> Result<Self, Self::Error> {
        Self::new(v)
    }
}

impl From<JsonValue> for serde_json::Value {
    fn from(v: JsonValue) -> Self {
        v.0
    }
}

impl fmt::Debug for JsonValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A SQL function to call: `name` or `schema.name`, each part 1–63
/// characters of `[a-z0-9_]` not starting with a digit. Rendered as quoted
/// identifiers (`"schema"."name"`); no allowed character can end one.
///
/// Two names are equal when their text is: `record_note` and
/// `public.record_note` differ (the first resolves through the
/// `search_path` of whoever runs it).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FunctionName(Box<str>);

impl FunctionName {
    /// Parses `name` or `schema.name`.
    pub fn parse(s: &str) -> Result<Self, CommandError> {
        let ident = |part: &str| {
            (1..=63).contains(&part.len())
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                && !part.as_bytes()[0].is_ascii_digit()
        };
        let ok = match s.split_once('.') {
            Some((schema, name)) => ident(schema) && ident(name),
            None => ident(s),
        };
        if ok {
            Ok(FunctionName(s.into()))
        } else {
            Err(CommandError::FunctionName(Snippet::new(s)))
        }
    }

    /// The name as written (`name` or `schema.name`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn to_sql(&self) -> String {
        match self.0.split_once('.') {
            Some((schema, name)) => format!("\"{schema}\".\"{name}\""),
            None => format!("\"{}\"", self.0),
        }
    }
}

opsdeck_core::text_id!(FunctionName, CommandError);

/// A typed argument of [`JobCommand::CallFunction`], rendered as a literal
/// with an explicit cast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SqlValue {
    /// `NULL`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A `bigint`.
    Int(i64),
    /// A `text` literal.
    Text(SqlText),
    /// A `jsonb` literal.
    Json(JsonValue),
    /// A `uuid` literal.
    Uuid(Uuid),
    /// The id of the user who owns the job (`uuid`), filled in when rendered.
    JobUser,
}

impl SqlValue {
    /// A text argument (no NUL, size limit).
    pub fn text(s: impl Into<String>) -> Result<Self, CommandError> {
        SqlText::new(s).map(SqlValue::Text)
    }

    fn to_sql(&self, context: &CommandContext<'_>) -> String {
        match self {
            SqlValue::Null => "NULL".to_string(),
            SqlValue::Bool(b) => b.to_string(),
            // Quoted: a bare `-9223372036854775808::bigint` would cast before
            // negating and overflow.
            SqlValue::Int(i) => format!("'{i}'::bigint"),
            SqlValue::Text(t) => format!("{}::text", literal(t.as_str())),
            SqlValue::Json(j) => j.to_sql(),
            SqlValue::Uuid(u) => format!("{}::uuid", literal(&u.to_string())),
            SqlValue::JobUser => format!("{}::uuid", literal(&context.user.to_string())),
        }
    }
}

/// What a job does when it fires.
///
/// Every variant renders ([`JobCommand::to_sql`]) to one `SELECT` of a
/// function, with all values as quoted literals. `RunOperation` and
/// `RefreshRecommendations` cannot do their work inside PostgreSQL (they call
/// models and analytics in Rust), so they queue a request in
/// `opsdeck.cron_job_requests` that the application takes with
/// [`crate::CronRegistry::take_requests`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobCommand {
    /// Queue a run of the job's operation for the job's user.
    RunOperation {
        /// Arguments handed to the operation (a JSON object).
        arguments: JsonValue,
    },
    /// Queue a refresh of the job's user's recommendations.
    RefreshRecommendations,
    /// Delete the job's user's run history older than `keep_days` days
    /// (`opsdeck.prune_cron_history`).
    PruneHistory {
        /// Days of history to keep.
        keep_days: u16,
    },
    /// Call a SQL function with typed arguments.
    CallFunction {
        /// The function.
        function: FunctionName,
        /// Its arguments, in order.
        arguments: Vec<SqlValue>,
    },
}

/// The job a command is rendered for.
#[derive(Debug, Clone, Copy)]
pub struct CommandContext<'a> {
    /// The job's owner.
    pub user: UserId,
    /// The job's operation.
    pub operation: &'a OperationId,
    /// The job's name.
    pub job: &'a JobName,
}

impl JobCommand {
    /// `RunOperation` with arguments (which must be a JSON object).
    pub fn run_operation(arguments: serde_json::Value) -> Result<Self, CommandError> {
        if !arguments.is_object() {
            return Err(CommandError::NotAnObject);
        }
        Ok(JobCommand::RunOperation {
            arguments: JsonValue::new(arguments)?,
        })
    }

    /// `CallFunction`, checking the argument count.
    pub fn call_function(
        function: FunctionName,
        arguments: Vec<SqlValue>,
    ) -> Result<Self, CommandError> {
        if arguments.len() > MAX_FUNCTION_ARGS {
            return Err(CommandError::TooLarge {
                what: "argument list",
                len: arguments.len(),
                max: MAX_FUNCTION_ARGS,
            });
        }
        Ok(JobCommand::CallFunction {
            function,
            arguments,
        })
    }

    /// The stored kind (`command_kind` column).
    pub fn kind(&self) -> &'static str {
        match self {
            JobCommand::RunOperation { .. } => "run_operation",
            JobCommand::RefreshRecommendations => "refresh_recommendations",
            JobCommand::PruneHistory { .. } => "prune_history",
            JobCommand::CallFunction { .. } => "call_function",
        }
    }

    /// The stored arguments (`command_args` column): the variant's fields
    /// as a JSON object.
    pub fn arguments_json(&self) -> serde_json::Value {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut map)) => {
                map.remove("kind");
                serde_json::Value::Object(map)
            }
            // Serializing these plain data types cannot fail.
            _ => serde_json::Value::Object(serde_json::Map::new()),
        }
    }

    /// Reads a command back from its stored kind and arguments, re-checking
    /// every value.
    pub fn from_stored(kind: &str, arguments: serde_json::Value) -> Result<Self, CommandError> {
        let stored = |reason: String| CommandError::Stored {
            kind: Snippet::new(kind),
            reason,
        };
        let serde_json::Value::Object(mut map) = arguments else {
            return Err(stored("arguments are not an object".into()));
        };
        map.insert("kind".into(), serde_json::Value::String(kind.into()));
        let command: JobCommand = serde_json::from_value(serde_json::Value::Object(map))
            .map_err(|e| stored(e.to_string()))?;
        if let JobCommand::CallFunction { arguments, .. } = &command
            && arguments.len() > MAX_FUNCTION_ARGS
        {
            return Err(stored("too many arguments".into()));
        }
        Ok(command)
    }

    /// The SQL pg_cron (or the in-process runner) executes in the
    /// application database for the job described by `context`.
    pub fn to_sql(&self, context: &CommandContext<'_>) -> String {
        let user = format!("{}::uuid", literal(&context.user.to_string()));
        let enqueue = |kind: &str, arguments: String| {
            format!(
                "SELECT opsdeck.enqueue_cron_request({}, {user}, {}, {}, {arguments})",
                literal(kind),
                literal(context.job.as_str()),
                literal(context.operation.as_str()),
            )
        };
        match self {
            JobCommand::RunOperation { arguments } => enqueue(self.kind(), arguments.to_sql()),
            JobCommand::RefreshRecommendations => {
                enqueue(self.kind(), JsonValue::empty_object().to_sql())
            }
            JobCommand::PruneHistory { keep_days } => {
                format!("SELECT opsdeck.prune_cron_history({user}, {keep_days})")
            }
            JobCommand::CallFunction {
                function,
                arguments,
            } => {
                let args: Vec<String> = arguments.iter().map(|a| a.to_sql(context)).collect();
                format!("SELECT {}({})", function.to_sql(), args.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn context() -> (UserId, OperationId, JobName) {
        (
            "5f0c3b5e-8a7e-4d1b-9a57-6f1f6d1c2b3a".parse().unwrap(),
            "summarize".parse().unwrap(),
            "nightly".parse().unwrap(),
        )
    }

    #[test]
    fn renders_each_kind() {
        let (user, op, job) = context();
        let ctx = CommandContext {
            user,
            operation: &op,
            job: &job,
        };
        assert_eq!(
            JobCommand::run_operation(json!({"lang": "en"}))
                .unwrap()
                .to_sql(&ctx),
            "SELECT opsdeck.enqueue_cron_request('run_operation', \
             '5f0c3b5e-8a7e-4d1b-9a57-6f1f6d1c2b3a'::uuid, 'nightly', 'summarize', \
             '{\"lang\":\"en\"}'::jsonb)"
        );
        assert_eq!(
            JobCommand::PruneHistory { keep_days: 30 }.to_sql(&ctx),
            "SELECT opsdeck.prune_cron_history('5f0c3b5e-8a7e-4d1b-9a57-6f1f6d1c2b3a'::uuid, 30)"
        );
        let call = JobCommand::call_function(
            "public.do_it".parse().unwrap(),
            vec![
                SqlValue::JobUser,
                SqlValue::text("x'); DROP TABLE t; --").unwrap(),
                SqlValue::Int(-3),
                SqlValue::Bool(true),
                SqlValue::Null,
            ],
        )
        .unwrap();
        assert_eq!(
            call.to_sql(&ctx),
            "SELECT \"public\".\"do_it\"('5f0c3b5e-8a7e-4d1b-9a57-6f1f6d1c2b3a'::uuid, \
             'x''); DROP TABLE t; --'::text, '-3'::bigint, true, NULL)"
        );
    }

    #[test]
    fn quoting_handles_quotes_backslashes_and_nul() {
        assert_eq!(quote_literal("").unwrap(), "''");
        assert_eq!(quote_literal("'").unwrap(), "''''");
        assert_eq!(quote_literal(r"\'").unwrap(), r"E'\\'''");
        assert_eq!(quote_literal("\0"), Err(CommandError::Nul { what: "text" }));
        assert!(SqlText::new("a\0b").is_err());
        assert!(JsonValue::new(json!({"k": "a\u{0}b"})).is_err());
        assert!(JsonValue::new(json!({"a\u{0}": 1})).is_err());
        assert!(SqlText::new("x".repeat(MAX_VALUE_BYTES + 1)).is_err());
        assert_eq!(
            JobCommand::run_operation(json!([1])),
            Err(CommandError::NotAnObject)
        );
    }

    #[test]
    fn function_names_are_identifiers_only() {
        for ok in ["f", "opsdeck.refresh_stats", "_x.y_2"] {
            assert_eq!(FunctionName::parse(ok).unwrap().to_string(), ok);
        }
        for bad in [
            "",
            "F",
            "1f",
            "a.b.c",
            "a.",
            ".b",
            "f()",
            "f\"; drop table t; --",
            "f;drop",
            &"a".repeat(64),
        ] {
            assert!(FunctionName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stored_form_round_trips() {
        let commands = [
            JobCommand::run_operation(json!({"n": 1, "s": "it's"})).unwrap(),
            JobCommand::RefreshRecommendations,
            JobCommand::PruneHistory { keep_days: 7 },
            JobCommand::call_function(
                "opsdeck.f".parse().unwrap(),
                vec![
                    SqlValue::JobUser,
                    SqlValue::Json(JsonValue::new(json!([1, "two"])).unwrap()),
                    SqlValue::Uuid(Uuid::nil()),
                ],
            )
            .unwrap(),
        ];
        for command in commands {
            let back = JobCommand::from_stored(command.kind(), command.arguments_json()).unwrap();
            assert_eq!(back, command);
        }
        assert!(JobCommand::from_stored("drop_everything", json!({})).is_err());
        assert!(
            JobCommand::from_stored("call_function", json!({"function": "F()", "arguments": []}))
                .is_err()
        );
        assert!(
            JobCommand::from_stored(
                "call_function",
                json!({"function": "f", "arguments": [{"type": "text", "value": "a\u{0}"}]})
            )
            .is_err()
        );
    }

    /// Decodes a PostgreSQL literal the way the server does with
    /// `standard_conforming_strings` on (and, for `E''`, off).
    fn unquote(lit: &str) -> Option<String> {
        let (escape, body) = match lit.strip_prefix('E') {
            Some(rest) => (true, rest),
            None => (false, lit),
        };
        let body = body.strip_prefix('\'')?.strip_suffix('\'')?;
        let mut out = String::new();
        let mut chars = body.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\'' => {
                    if chars.next()? != '\'' {
                        return None; // a lone quote would end the literal early
                    }
                    out.push('\'');
                }
                '\\' if escape => {
                    if chars.next()? != '\\' {
                        return None;
                    }
                    out.push('\\');
                }
                c => out.push(c),
            }
        }
        Some(out)
    }

    proptest! {
        #[test]
        fn literals_decode_to_their_input(s in "\\PC{0,60}") {
            prop_assume!(!s.contains('\0'));
            let lit = quote_literal(&s).unwrap();
            prop_assert_eq!(unquote(&lit), Some(s));
        }

        #[test]
        fn function_name_parse_never_panics(s in "\\PC{0,80}") {
            let _ = FunctionName::parse(&s);
        }
    }
}
