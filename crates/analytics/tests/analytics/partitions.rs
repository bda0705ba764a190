//! Monthly partitions of the log: routing, moving rows out of the default
//! partition, retention by dropping or detaching partitions, append-only.

use opsdeck_analytics::testing::{execution, histogram_of, totals_of};
use opsdeck_analytics::{
    AnalyticsRepository, DateRange, Execution, PgAnalyticsRepository, RollupFilter,
};
use opsdeck_core::UserId;
use sqlx::PgPool;
use time::{Date, Month, OffsetDateTime};

/// The first day of the month `back` months before the current one.
fn month_start(back: i32) -> Date {
    let today = OffsetDateTime::now_utc().date();
    let months = today.year() * 12 + i32::from(u8::from(today.month())) - 1 - back;
    let month = Month::try_from((months % 12 + 1) as u8).unwrap();
    Date::from_calendar_date(months / 12, month, 1).unwrap()
}

/// An execution at noon on `day` of the month `back` months ago.
fn in_month(user: UserId, back: i32, day: u8) -> Execution {
    let date = month_start(back).replace_day(day).unwrap();
    let mut run = execution(user, "archive", "m/a", 0, 100 + i64::from(day), 10);
    run.executed_at = date.with_time(time::macros::time!(12:00)).assume_utc();
    run
}

/// Midnight UTC starting `day` of the month `back` months ago.
fn midnight(back: i32, day: u8) -> OffsetDateTime {
    month_start(back)
        .replace_day(day)
        .unwrap()
        .midnight()
        .assume_utc()
}

fn partition_name(back: i32) -> String {
    let start = month_start(back);
    format!(
        "operation_executions_p{}_{:02}",
        start.year(),
        u8::from(start.month())
    )
}

async fn partition_of(pool: &PgPool, run: &Execution) -> String {
    sqlx::query_scalar(
        "SELECT tableoid::regclass::text FROM opsdeck.operation_executions
         WHERE user_id = $1 AND execution_id = $2",
    )
    .bind(run.user_id)
    .bind(run.execution_id)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn exists(pool: &PgPool, table: &str) -> bool {
    sqlx::query_scalar::<_, Option<String>>("SELECT to_regclass($1)::text")
        .bind(format!("opsdeck.{table}"))
        .fetch_one(pool)
        .await
        .unwrap()
        .is_some()
}

#[sqlx::test(migrations = "../../migrations")]
async fn partitions_route_rows_and_retention_drops_whole_months(pool: PgPool) {
    let repo = PgAnalyticsRepository::new(pool.clone());
    let user = UserId::random();

    // Before its partition exists, a row waits in the default partition...
    let early = in_month(user, 3, 10);
    assert!(
        repo.record_operation_execution(early.clone())
            .await
            .unwrap()
    );
    assert_eq!(
        partition_of(&pool, &early).await,
        "opsdeck.operation_executions_default"
    );
    // ...and moves when the partition is created.
    let created = repo.create_partitions(month_start(4), 3).await.unwrap();
    assert_eq!(
        created,
        [partition_name(4), partition_name(3), partition_name(2)]
    );
    assert!(
        repo.create_partitions(month_start(4), 3)
            .await
            .unwrap()
            .is_empty(),
        "idempotent"
    );
    assert_eq!(
        partition_of(&pool, &early).await,
        format!("opsdeck.{}", partition_name(3))
    );

    let mut runs = vec![early];
    for back in 1..=4 {
        let run = in_month(user, back, 15);
        assert!(repo.record_operation_execution(run.clone()).await.unwrap());
        assert_eq!(
            partition_of(&pool, &run).await,
            format!("opsdeck.{}", partition_name(back))
        );
        runs.push(run);
    }
    let everything = RollupFilter::new(DateRange::new(month_start(5), month_start(0)).unwrap());
    let before = repo.period_summary(user, &everything).await.unwrap();
    assert_eq!(before.totals, totals_of(&runs));

    // Retention at the 20th of two months ago drops the months before it.
    let cutoff = midnight(2, 20);
    let report = repo.purge_executions_before(cutoff).await.unwrap();
    assert_eq!(report.horizon, midnight(2, 1));
    assert_eq!(
        report.dropped_partitions,
        [partition_name(4), partition_name(3)],
        "oldest first"
    );
    assert_eq!(
        report.forgotten_ids, 3,
        "two rows of month -3, one of month -4"
    );
    assert!(!exists(&pool, &partition_name(4)).await && !exists(&pool, &partition_name(3)).await);
    let range = DateRange::new(month_start(5), month_start(0)).unwrap();
    assert_eq!(repo.executions(user, range, 100).await.unwrap().len(), 2);

    // Detaching keeps the table for archiving but takes it out of the log.
    let cutoff = midnight(1, 5);
    let report = repo.detach_executions_before(cutoff).await.unwrap();
    assert_eq!(report.dropped_partitions, [partition_name(2)]);
    assert!(
        exists(&pool, &partition_name(2)).await,
        "detached, not dropped"
    );
    let archived: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM opsdeck.{}",
        partition_name(2)
    )))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(archived, 1);
    assert_eq!(repo.executions(user, range, 100).await.unwrap().len(), 1);

    // The rollups never lost anything.
    let after = repo.period_summary(user, &everything).await.unwrap();
    assert_eq!(after.totals, before.totals);
    assert_eq!(after.latency, histogram_of(&runs).percentiles());
}

#[sqlx::test(migrations = "../../migrations")]
async fn the_log_is_append_only(pool: PgPool) {
    let repo = PgAnalyticsRepository::new(pool.clone());
    let user = UserId::random();
    repo.record_operation_execution(execution(user, "op", "m/a", 1, 10, 10))
        .await
        .unwrap();
    let err =
        sqlx::query("UPDATE opsdeck.operation_executions SET cost_micros = 0 WHERE user_id = $1")
            .bind(user)
            .execute(&pool)
            .await
            .unwrap_err();
    assert_eq!(
        err.as_database_error().unwrap().code().as_deref(),
        Some("23001"),
        "{err}"
    );
}
