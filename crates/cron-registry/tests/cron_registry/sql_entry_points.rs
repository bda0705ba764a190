//! The SQL entry points (`opsdeck.register_cron_job(...)` and the other
//! functions of the schema) called through plain SQL, as another client
//! would: they refuse what the Rust types refuse and store nothing then,
//! and what they accept the Rust side reads back.

use opsdeck_core::UserId;
use opsdeck_cron_registry::{CronRegistry, CronSchedule, PgCronRegistry};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use sqlx::PgPool;

/// SQLSTATE `check_violation`: every refusal of the entry points.
const CHECK_VIOLATION: &str = "23514";

async fn rows_of(pool: &PgPool, user: UserId) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM opsdeck.cron_job_registry WHERE user_id = $1")
        .bind(user)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The text arguments of `register_cron_job`: job name, operation id,
/// schedule, command kind, command arguments (JSON).
type Call<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str);

/// `register_cron_job` from SQL with one argument changed from a valid
/// call; `Err(sqlstate)` if refused.
async fn register(
    pool: &PgPool,
    user: Option<UserId>,
    (name, operation, schedule, kind, args): Call<'_>,
    scheduler: &str,
) -> Result<(), String> {
    sqlx::query("SELECT opsdeck.register_cron_job($1, $2, $3, $4, $5, $6::jsonb, true, $7)")
        .bind(user)
        .bind(name)
        .bind(operation)
        .bind(schedule)
        .bind(kind)
        .bind(args)
        .bind(scheduler)
        .execute(pool)
        .await
        .map(drop)
        .map_err(|e| {
            e.as_database_error()
                .and_then(|d| d.code().map(|c| c.into_owned()))
                .unwrap_or_else(|| e.to_string())
        })
}

const GOOD: Call<'static> = (
    "nightly",
    "summarize",
    "30 2 * * *",
    "refresh_recommendations",
    "{}",
);

#[sqlx::test(migrations = "../../migrations")]
async fn register_cron_job_from_sql_refuses_what_the_types_refuse(pool: PgPool) {
    let user = UserId::random();
    let long_name = "n".repeat(64);
    let too_many_args = format!(
        r#"{{"function": "public.f", "arguments": [{}]}}"#,
        vec![r#"{"type": "null"}"#; 33].join(", ")
    );
    let big_text = format!(
        r#"{{"function": "public.f", "arguments": [{{"type": "text", "value": "{}"}}]}}"#,
        "x".repeat(16 * 1024 + 1)
    );
    let big_json = format!(r#"{{"arguments": {{"k": "{}"}}}}"#, "x".repeat(16 * 1024));
    let bad: Vec<(&str, Call<'_>)> = vec![
        (
            "schedule banana",
            ("j", "summarize", "banana", "refresh_recommendations", "{}"),
        ),
        (
            "minute 61",
            (
                "j",
                "summarize",
                "61 * * * *",
                "refresh_recommendations",
                "{}",
            ),
        ),
        (
            "never fires",
            (
                "j",
                "summarize",
                "0 0 30 2 *",
                "refresh_recommendations",
                "{}",
            ),
        ),
        (
            "six fields",
            (
                "j",
                "summarize",
                "* * * * * *",
                "refresh_recommendations",
                "{}",
            ),
        ),
        (
            "empty schedule",
            ("j", "summarize", "  ", "refresh_recommendations", "{}"),
        ),
        (
            "@reboot",
            ("j", "summarize", "@reboot", "refresh_recommendations", "{}"),
        ),
        (
            "0 seconds",
            (
                "j",
                "summarize",
                "0 seconds",
                "refresh_recommendations",
                "{}",
            ),
        ),
        (
            "step without range",
            (
                "j",
                "summarize",
                "5/10 * * * *",
                "refresh_recommendations",
                "{}",
            ),
        ),
        (
            "reversed range",
            (
                "j",
                "summarize",
                "30-10 * * * *",
                "refresh_recommendations",
                "{}",
            ),
        ),
        (
            "$ in a list",
            (
                "j",
                "summarize",
                "0 0 1,$ * *",
                "refresh_recommendations",
                "{}",
            ),
        ),
        (
            "bad job name",
            (
                "bad name!",
                "summarize",
                "@daily",
                "refresh_recommendations",
                "{}",
            ),
        ),
        (
            "leading dash",
            ("-x", "summarize", "@daily", "refresh_recommendations", "{}"),
        ),
        (
            "long job name",
            (
                &long_name,
                "summarize",
                "@daily",
                "refresh_recommendations",
                "{}",
            ),
        ),
        (
            "bad operation",
            ("j", "Bad Op", "@daily", "refresh_recommendations", "{}"),
        ),
        (
            "unknown kind",
            ("j", "summarize", "@daily", "drop_everything", "{}"),
        ),
        (
            "refresh with args",
            (
                "j",
                "summarize",
                "@daily",
                "refresh_recommendations",
                r#"{"x": 1}"#,
            ),
        ),
        (
            "run_operation, array",
            (
                "j",
                "summarize",
                "@daily",
                "run_operation",
                r#"{"arguments": [1]}"#,
            ),
        ),
        (
            "run_operation, none",
            ("j", "summarize", "@daily", "run_operation", "{}"),
        ),
        (
            "run_operation, 16 KiB",
            ("j", "summarize", "@daily", "run_operation", &big_json),
        ),
        (
            "keep_days -1",
            (
                "j",
                "summarize",
                "@daily",
                "prune_history",
                r#"{"keep_days": -1}"#,
            ),
        ),
        (
            "keep_days 70000",
            (
                "j",
                "summarize",
                "@daily",
                "prune_history",
                r#"{"keep_days": 70000}"#,
            ),
        ),
        (
            "keep_days 1.5",
            (
                "j",
                "summarize",
                "@daily",
                "prune_history",
                r#"{"keep_days": 1.5}"#,
            ),
        ),
        (
            "function F()",
            (
                "j",
                "summarize",
                "@daily",
                "call_function",
                r#"{"function": "F()", "arguments": []}"#,
            ),
        ),
        (
            "33 arguments",
            ("j", "summarize", "@daily", "call_function", &too_many_args),
        ),
        (
            "text too long",
            ("j", "summarize", "@daily", "call_function", &big_text),
        ),
        (
            "int 1.5",
            (
                "j",
                "summarize",
                "@daily",
                "call_function",
                r#"{"function": "f", "arguments": [{"type": "int", "value": 1.5}]}"#,
            ),
        ),
        (
            "int beyond i64",
            (
                "j",
                "summarize",
                "@daily",
                "call_function",
                r#"{"function": "f", "arguments": [{"type": "int", "value": 9223372036854775808}]}"#,
            ),
        ),
        (
            "uuid",
            (
                "j",
                "summarize",
                "@daily",
                "call_function",
                r#"{"function": "f", "arguments": [{"type": "uuid", "value": "not-a-uuid"}]}"#,
            ),
        ),
        (
            "unknown type",
            (
                "j",
                "summarize",
                "@daily",
                "call_function",
                r#"{"function": "f", "arguments": [{"type": "sql", "value": "DROP TABLE t"}]}"#,
            ),
        ),
        (
            "json beyond f64",
            (
                "j",
                "summarize",
                "@daily",
                "run_operation",
                r#"{"arguments": {"n": 1e400}}"#,
            ),
        ),
    ];
    for (what, call) in bad {
        let result = register(&pool, Some(user), call, "runner").await;
        assert_eq!(result, Err(CHECK_VIOLATION.to_string()), "{what}: {call:?}");
        assert_eq!(rows_of(&pool, user).await, 0, "{what}: nothing stored");
    }
    assert!(
        register(&pool, Some(user), GOOD, "cron").await.is_err(),
        "unknown scheduler"
    );
    assert!(
        register(&pool, None, GOOD, "runner").await.is_err(),
        "no user"
    );
    assert_eq!(rows_of(&pool, user).await, 0);

    // A replacement that is refused keeps the job as it was.
    register(&pool, Some(user), GOOD, "runner").await.unwrap();
    let (name, op, _, kind, args) = GOOD;
    let refused = register(
        &pool,
        Some(user),
        (name, op, "banana", kind, args),
        "runner",
    )
    .await;
    assert_eq!(refused, Err(CHECK_VIOLATION.to_string()));
    let registry = PgCronRegistry::with_runner(pool.clone());
    let job = registry
        .get(user, &"nightly".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.schedule.as_str(), "30 2 * * *");

    // Writes around the functions meet the same rules.
    let direct = sqlx::query(
        "INSERT INTO opsdeck.cron_job_registry (user_id, job_name, operation_id, schedule, command_kind)
         VALUES ($1, 'direct', 'summarize', 'banana', 'refresh_recommendations')",
    )
    .bind(user)
    .execute(&pool)
    .await;
    assert!(
        direct.is_err(),
        "a direct INSERT of 'banana' is refused too"
    );
    let direct = sqlx::query(
        "UPDATE opsdeck.cron_job_registry SET command_args = '{\"keep_days\": -3}', command_kind = 'prune_history'
         WHERE user_id = $1",
    )
    .bind(user)
    .execute(&pool)
    .await;
    assert!(
        direct.is_err(),
        "a direct UPDATE to a bad command is refused too"
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn register_cron_job_from_sql_accepts_what_the_types_accept(pool: PgPool) {
    let user = UserId::random();
    let call = r#"{"function": "public.f", "arguments": [
        {"type": "null"}, {"type": "bool", "value": true}, {"type": "int", "value": -9223372036854775808},
        {"type": "text", "value": "it's; DROP TABLE t; --"}, {"type": "json", "value": {"a": [1, 2.5, null]}},
        {"type": "uuid", "value": "67e55044-10b1-426f-9247-bb680e5fe0c8"}, {"type": "job_user"}]}"#;
    let good = [
        ("a", "30 2 * * *", "refresh_recommendations", "{}"),
        (
            "b",
            "  0\t0  1 jan,JUL *  ",
            "run_operation",
            r#"{"arguments": {"lang": "en"}}"#,
        ),
        ("c", "@hourly", "prune_history", r#"{"keep_days": 65535}"#),
        ("d", "*/5 9-17 * * mon-fri", "call_function", call),
        ("e", "10 seconds", "refresh_recommendations", "{}"),
        ("f", "0 22 $ * *", "refresh_recommendations", "{}"),
        ("g", "0 0 29 2 *", "prune_history", r#"{"keep_days": 0}"#),
        (
            "h",
            "0-59/15 */2 1-31/2 * 0,7",
            "refresh_recommendations",
            "{}",
        ),
    ];
    for (name, schedule, kind, args) in good {
        register(
            &pool,
            Some(user),
            (name, "summarize", schedule, kind, args),
            "runner",
        )
        .await
        .unwrap_or_else(|e| panic!("{name} {schedule:?} {kind}: {e}"));
    }
    // Every row reads back through the Rust types (none is corrupt), with
    // the schedule as pg_cron will get it.
    let registry = PgCronRegistry::with_runner(pool.clone());
    let jobs = registry.list_for_user(user).await.unwrap();
    assert_eq!(jobs.len(), good.len());
    for (job, (_, schedule, ..)) in jobs.iter().zip(good) {
        assert_eq!(job.schedule, CronSchedule::parse(schedule).unwrap());
        assert_eq!(
            job.schedule.as_str(),
            CronSchedule::parse(schedule).unwrap().as_str()
        );
    }
    assert_eq!(
        jobs[1].schedule.as_str(),
        "0 0 1 jan,JUL *",
        "stored normalized"
    );
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_other_entry_points_refuse_bad_input(pool: PgPool) {
    let user = UserId::random();
    register(&pool, Some(user), GOOD, "runner").await.unwrap();
    let scalar = |sql: &'static str, name: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, bool>(sql)
                .bind(user)
                .bind(name)
                .fetch_one(&pool)
                .await
        }
    };
    for sql in [
        "SELECT opsdeck.check_cron_job_exists($1, $2)",
        "SELECT opsdeck.unregister_cron_job($1, $2)",
    ] {
        assert!(scalar(sql, "bad name!").await.is_err(), "{sql}: bad name");
        assert!(
            !scalar(sql, "other").await.unwrap(),
            "{sql}: a good missing name"
        );
    }
    assert!(
        scalar("SELECT opsdeck.check_cron_job_exists($1, $2)", "nightly")
            .await
            .unwrap()
    );
    assert!(
        sqlx::query_scalar::<_, bool>("SELECT opsdeck.check_cron_job_exists(NULL, 'nightly')")
            .fetch_one(&pool)
            .await
            .is_err(),
        "no user"
    );

    let enqueue = |kind: &'static str, name: &'static str, op: &'static str, args: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT opsdeck.enqueue_cron_request($1, $2, $3, $4, $5::jsonb)",
            )
            .bind(kind)
            .bind(user)
            .bind(name)
            .bind(op)
            .bind(args)
            .fetch_one(&pool)
            .await
        }
    };
    for (kind, name, op, args) in [
        ("drop_everything", "nightly", "summarize", "{}"),
        ("run_operation", "bad name!", "summarize", "{}"),
        ("run_operation", "nightly", "Bad Op", "{}"),
        ("run_operation", "nightly", "summarize", "[1]"),
        ("prune_history", "nightly", "summarize", "{}"),
    ] {
        assert!(
            enqueue(kind, name, op, args).await.is_err(),
            "{kind} {name} {op} {args}"
        );
    }
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM opsdeck.cron_job_requests")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(queued, 0, "nothing queued");
    enqueue("run_operation", "nightly", "summarize", r#"{"a": 1}"#)
        .await
        .unwrap();

    for (keep, user) in [(-1, Some(user)), (70_000, Some(user)), (7, None)] {
        let pruned = sqlx::query_scalar::<_, i64>("SELECT opsdeck.prune_cron_history($1, $2)")
            .bind(user)
            .bind(keep)
            .fetch_one(&pool)
            .await;
        assert!(pruned.is_err(), "keep {keep} days, user {user:?}");
    }
    let pruned: i64 = sqlx::query_scalar("SELECT opsdeck.prune_cron_history($1, 7)")
        .bind(user)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(pruned, 0);
}

/// Schedules of every shape (well-formed and not): the SQL grammar check
/// accepts exactly what `CronSchedule::parse` accepts.
#[sqlx::test(migrations = "../../migrations")]
async fn sql_and_rust_agree_on_schedules(pool: PgPool) {
    let number = || (0u32..70).prop_map(|n| n.to_string());
    let name = || {
        proptest::sample::select(vec![
            "jan", "FEB", "Dec", "sun", "mon", "SAT", "foo", "ju", "$", "L", "?",
        ])
        .prop_map(str::to_string)
    };
    let atom =
        || proptest::prop_oneof![number(), name(), proptest::strategy::Just("*".to_string())];
    let item = move || {
        (
            atom(),
            proptest::option::of(atom()),
            proptest::option::of(0u32..12),
        )
            .prop_map(|(a, b, step)| {
                let mut s = match b {
                    Some(b) => format!("{a}-{b}"),
                    None => a,
                };
                if let Some(step) = step {
                    s = format!("{s}/{step}");
                }
                s
            })
    };
    let field = move || {
        proptest::prop_oneof![
            3 => item(),
            1 => proptest::collection::vec(item(), 1..4).prop_map(|v| v.join(",")),
            1 => proptest::sample::select(vec!["*", "$", ",", "1,,2", "*/0", "1-2-3", "01", "0007"])
                .prop_map(str::to_string),
        ]
    };
    let five = proptest::collection::vec(field(), 5).prop_map(|f| f.join(" "));
    let other_counts = proptest::collection::vec(field(), 0..8).prop_map(|f| f.join("  "));
    let interval = (
        0u32..80,
        proptest::sample::select(vec![
            " seconds",
            "seconds",
            " second",
            " SECONDS",
            "  Seconds ",
            " secs",
            "\u{a0}seconds",
            "\nseconds",
            " seconds x",
        ]),
    )
        .prop_map(|(n, unit)| format!("{n}{unit}"));
    let alias = proptest::sample::select(vec![
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
        "@reboot",
        "@Daily",
        "@",
        "@daily x",
        " @hourly ",
    ])
    .prop_map(str::to_string);
    let noise = "[0-9*/,$@a-zA-Z \t-]{0,30}";
    let strategy =
        proptest::prop_oneof![4 => five, 1 => other_counts, 1 => interval, 1 => alias, 1 => noise];

    let mut runner = TestRunner::deterministic();
    let mut samples: Vec<String> = (0..4000)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect();
    samples.extend(
        [
            "0 0 31 2,4 *",
            "0 0 31 * 1",
            "0 0 30 2 *",
            "0 0 29 2 *",
            "* * * * 7-7",
            &"x".repeat(121),
        ]
        .map(String::from),
    );
    let verdicts: Vec<(String, bool)> = sqlx::query_as(
        "SELECT s, opsdeck.cron_schedule_problem(s) IS NULL FROM unnest($1::text[]) AS s",
    )
    .bind(&samples)
    .fetch_all(&pool)
    .await
    .unwrap();
    let disagreements: Vec<String> = verdicts
        .iter()
        .filter(|(s, sql_ok)| CronSchedule::parse(s).is_ok() != *sql_ok)
        .map(|(s, sql_ok)| format!("{s:?}: rust {}, sql {sql_ok}", !sql_ok))
        .collect();
    let accepted = verdicts.iter().filter(|(_, ok)| *ok).count();
    assert!(
        accepted > 500,
        "the sample exercises valid schedules too ({accepted})"
    );
    assert!(
        disagreements.is_empty(),
        "{} disagreements: {:#?}",
        disagreements.len(),
        &disagreements[..disagreements.len().min(20)]
    );
}
