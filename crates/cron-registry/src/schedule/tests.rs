//! The schedule's rules, checked through its public API.

use super::grammar::{MONTH, WEEKDAY};
use super::*;
use proptest::prelude::*;
use time::macros::datetime;

fn runs(schedule: &str, after: OffsetDateTime, n: usize) -> Vec<OffsetDateTime> {
    CronSchedule::parse(schedule)
        .unwrap()
        .next_runs_after(after, n)
}

#[test]
fn accepts_valid_five_field_forms() {
    for ok in [
        "* * * * *",
        "0 * * * *",
        "*/5 * * * *",
        "0-30/10 8-18 * * mon-fri",
        "5,10,15 1,2 1,15 jan,JUL * ",
        "  0\t0  1 1 *",
        "59 23 31 12 7",
        "0 0 * * sun",
        "0 12 1-7 * 1",
        "0 0 29 2 *",
        "*/100 * * * *",
    ] {
        assert!(CronSchedule::parse(ok).is_ok(), "{ok:?} should parse");
        assert!(
            CronSchedule::parse_for(ok, PgCronVersion::V1_4).is_ok(),
            "{ok:?} is 1.4 syntax"
        );
    }
    assert_eq!(
        CronSchedule::parse("  0\t0  1 1 *").unwrap().as_str(),
        "0 0 1 1 *"
    );
}

#[test]
fn refuses_invalid_five_field_forms() {
    let field = |s: &str| match CronSchedule::parse(s) {
        Err(ScheduleError::InvalidField { field, .. }) => field,
        other => panic!("{s:?}: expected an invalid field, got {other:?}"),
    };
    assert_eq!(field("60 * * * *"), "minute");
    assert_eq!(field("* 24 * * *"), "hour");
    assert_eq!(field("* * 0 * *"), "day-of-month");
    assert_eq!(field("* * 32 * *"), "day-of-month");
    assert_eq!(field("* * * 13 *"), "month");
    assert_eq!(field("* * * * 8"), "day-of-week");
    assert_eq!(field("5/10 * * * *"), "minute");
    assert_eq!(field("*/0 * * * *"), "minute");
    assert_eq!(field("10-5 * * * *"), "minute");
    assert_eq!(field("1,,2 * * * *"), "minute");
    assert_eq!(field("a * * * *"), "minute");
    assert_eq!(field("* * * foo *"), "month");
    assert_eq!(field("* * * * monday"), "day-of-week");
    assert_eq!(field("-1 * * * *"), "minute");
    assert_eq!(field("* * $ * *x"), "day-of-week");
    for (bad, found) in [("* * * *", 4), ("* * * * * *", 6), ("0 0 * * * cmd", 6)] {
        assert_eq!(
            CronSchedule::parse(bad),
            Err(ScheduleError::FieldCount {
                input: Snippet::new(bad),
                found
            })
        );
    }
    assert_eq!(CronSchedule::parse("   "), Err(ScheduleError::Empty));
    assert!(matches!(
        CronSchedule::parse(&"* ".repeat(100)),
        Err(ScheduleError::TooLong { .. })
    ));
    assert!(matches!(
        CronSchedule::parse("0 0 30 2 *"),
        Err(ScheduleError::NeverFires { .. })
    ));
    assert!(matches!(
        CronSchedule::parse("0 0 31 4,6,9,11 *"),
        Err(ScheduleError::NeverFires { .. })
    ));
}

#[test]
fn aliases_are_pg_crons() {
    for (alias, same_as) in [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
    ] {
        let at = datetime!(2025-03-14 15:09:26 UTC);
        let parsed = CronSchedule::parse_for(alias, PgCronVersion::V1_4).unwrap();
        assert_eq!(parsed.as_str(), alias, "pg_cron gets the alias itself");
        assert_eq!(
            parsed.next_runs_after(at, 3),
            runs(same_as, at, 3),
            "{alias}"
        );
    }
    for bad in ["@reboot", "@Daily", "@every", "@", "@daily now"] {
        assert!(CronSchedule::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn seconds_need_pg_cron_1_5() {
    for ok in [
        "10 seconds",
        "1 second",
        "59 SECONDS",
        "30seconds",
        " 5  seconds ",
    ] {
        let parsed = CronSchedule::parse(ok).unwrap();
        assert_eq!(parsed.required_version(), PgCronVersion::V1_5, "{ok:?}");
        assert!(CronSchedule::parse_for(ok, PgCronVersion::V1_5).is_ok());
        match CronSchedule::parse_for(ok, PgCronVersion::V1_4) {
            Err(ScheduleError::NeedsVersion { needed, found, .. }) => {
                assert_eq!((needed, found), (PgCronVersion::V1_5, PgCronVersion::V1_4));
            }
            other => panic!("{ok:?}: {other:?}"),
        }
    }
    let err = CronSchedule::parse_for("10 seconds", PgCronVersion::V1_4).unwrap_err();
    assert!(
        err.to_string().contains("need pg_cron 1.5 or later"),
        "{err}"
    );
    for bad in ["0 seconds", "60 seconds", "100 seconds"] {
        assert!(
            matches!(
                CronSchedule::parse(bad),
                Err(ScheduleError::IntervalOutOfRange { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(CronSchedule::parse("10 minutes").is_err());
    assert!(CronSchedule::parse("seconds").is_err());
}

#[test]
fn last_day_needs_pg_cron_1_6() {
    let parsed = CronSchedule::parse("0 23 $ * *").unwrap();
    assert_eq!(parsed.required_version(), PgCronVersion::V1_6);
    assert!(CronSchedule::parse_for("0 23 $ * *", PgCronVersion::V1_6).is_ok());
    for older in [PgCronVersion::V1_4, PgCronVersion::V1_5] {
        match CronSchedule::parse_for("0 23 $ * *", older) {
            Err(ScheduleError::NeedsVersion { needed, .. }) => {
                assert_eq!(needed, PgCronVersion::V1_6)
            }
            other => panic!("{other:?}"),
        }
    }
    // Hand-computed: the last days of Feb (leap year), Mar and Apr 2024.
    assert_eq!(
        parsed.next_runs_after(datetime!(2024-02-10 00:00 UTC), 3),
        [
            datetime!(2024-02-29 23:00 UTC),
            datetime!(2024-03-31 23:00 UTC),
            datetime!(2024-04-30 23:00 UTC),
        ]
    );
    assert!(
        CronSchedule::parse("0 0 1,$ * *").is_err(),
        "$ stands alone"
    );
}

#[test]
fn versions_parse_from_extversion() {
    assert_eq!(PgCronVersion::parse("1.4-1"), Some(PgCronVersion::V1_4));
    assert_eq!(PgCronVersion::parse("1.4"), Some(PgCronVersion::V1_4));
    assert_eq!(PgCronVersion::parse("1.6.4"), Some(PgCronVersion::V1_6));
    assert_eq!(PgCronVersion::parse("2"), Some(PgCronVersion::new(2, 0)));
    assert_eq!(PgCronVersion::parse("dev"), None);
    assert!(PgCronVersion::V1_4 < PgCronVersion::V1_5);
    assert_eq!(PgCronVersion::V1_6.to_string(), "1.6");
}

#[test]
fn next_runs_match_hand_computed_times() {
    // Every 15 minutes from 10:07 → 10:15, 10:30, 10:45, 11:00.
    assert_eq!(
        runs("*/15 * * * *", datetime!(2025-01-01 10:07:30 UTC), 4),
        [
            datetime!(2025-01-01 10:15 UTC),
            datetime!(2025-01-01 10:30 UTC),
            datetime!(2025-01-01 10:45 UTC),
            datetime!(2025-01-01 11:00 UTC),
        ]
    );
    // "Strictly after": a start exactly on a run skips it.
    assert_eq!(
        runs("0 * * * *", datetime!(2025-01-01 10:00 UTC), 1),
        [datetime!(2025-01-01 11:00 UTC)]
    );
    // Weekdays at 09:30: 2025-01-03 is a Friday, so Fri, Mon, Tue.
    assert_eq!(
        runs("30 9 * * mon-fri", datetime!(2025-01-03 08:00 UTC), 3),
        [
            datetime!(2025-01-03 09:30 UTC),
            datetime!(2025-01-06 09:30 UTC),
            datetime!(2025-01-07 09:30 UTC),
        ]
    );
    // Both day fields restricted → OR: the 13th or any Friday.
    // Jan 2025: Fri 3, Fri 10, Mon 13, Fri 17.
    assert_eq!(
        runs("0 0 13 * 5", datetime!(2025-01-01 00:00 UTC), 4),
        [
            datetime!(2025-01-03 00:00 UTC),
            datetime!(2025-01-10 00:00 UTC),
            datetime!(2025-01-13 00:00 UTC),
            datetime!(2025-01-17 00:00 UTC),
        ]
    );
    // Day-of-month starts with `*` → AND (Vixie/pg_cron rule): odd days
    // that are Mondays. Jan 2025 Mondays: 6, 13, 20, 27 → 13 and 27.
    assert_eq!(
        runs("0 0 */2 * mon", datetime!(2025-01-01 00:00 UTC), 2),
        [
            datetime!(2025-01-13 00:00 UTC),
            datetime!(2025-01-27 00:00 UTC),
        ]
    );
    // Sunday as 7, month names, Feb 29 only in leap years.
    assert_eq!(
        runs("0 6 * * 7", datetime!(2025-01-01 00:00 UTC), 1),
        [datetime!(2025-01-05 06:00 UTC)]
    );
    assert_eq!(
        runs("0 0 29 feb *", datetime!(2025-03-01 00:00 UTC), 1),
        [datetime!(2028-02-29 00:00 UTC)]
    );
    assert_eq!(
        runs("@weekly", datetime!(2025-01-01 00:00 UTC), 1),
        [datetime!(2025-01-05 00:00 UTC)]
    );
    // Intervals: multiples of N seconds after the start.
    assert_eq!(
        runs("20 seconds", datetime!(2025-01-01 00:00:05 UTC), 3),
        [
            datetime!(2025-01-01 00:00:20 UTC),
            datetime!(2025-01-01 00:00:40 UTC),
            datetime!(2025-01-01 00:01:00 UTC),
        ]
    );
    assert_eq!(
        CronSchedule::parse("* * * * *")
            .unwrap()
            .next_runs_after(datetime!(2025-01-01 00:00 UTC), 5000)
            .len(),
        CronSchedule::MAX_PREVIEW
    );
}

#[test]
fn slots_and_firing() {
    let every5 = CronSchedule::parse("*/5 * * * *").unwrap();
    assert!(every5.fires_at(datetime!(2025-01-01 10:05:42 UTC)));
    assert!(!every5.fires_at(datetime!(2025-01-01 10:06:00 UTC)));
    assert_eq!(
        every5.slot_of(datetime!(2025-01-01 10:05:42 UTC)),
        datetime!(2025-01-01 10:05 UTC)
    );
    let secs = CronSchedule::parse("15 seconds").unwrap();
    assert!(secs.fires_at(datetime!(2025-01-01 10:05:45 UTC)));
    assert!(!secs.fires_at(datetime!(2025-01-01 10:05:46 UTC)));
    assert_eq!(
        secs.slot_of(datetime!(2025-01-01 10:05:59 UTC)),
        datetime!(2025-01-01 10:05:45 UTC)
    );
}

#[test]
fn serde_round_trips_and_refuses_invalid() {
    let s: CronSchedule = serde_json::from_str("\"*/5 * * * *\"").unwrap();
    assert_eq!(serde_json::to_string(&s).unwrap(), "\"*/5 * * * *\"");
    assert!(serde_json::from_str::<CronSchedule>("\"61 * * * *\"").is_err());
}

fn field_strategy(min: u32, max: u32, names: &'static [&'static str]) -> BoxedStrategy<String> {
    let value = (min..=max).prop_map(|v| v.to_string());
    let item = prop_oneof![
        value.clone(),
        Just("*".to_string()),
        (1u32..20).prop_map(|s| format!("*/{s}")),
        (min..=max, min..=max, proptest::option::of(1u32..10)).prop_map(|(a, b, s)| {
            let (a, b) = (a.min(b), a.max(b));
            match s {
                Some(s) => format!("{a}-{b}/{s}"),
                None => format!("{a}-{b}"),
            }
        }),
    ];
    let item = if names.is_empty() {
        item.boxed()
    } else {
        prop_oneof![
            item,
            proptest::sample::select(names).prop_map(str::to_string)
        ]
        .boxed()
    };
    proptest::collection::vec(item, 1..4)
        .prop_map(|items| items.join(","))
        .boxed()
}

fn schedule_strategy() -> impl Strategy<Value = String> {
    (
        field_strategy(0, 59, &[]),
        field_strategy(0, 23, &[]),
        field_strategy(1, 31, &[]),
        field_strategy(1, 12, MONTH.names),
        field_strategy(0, 7, WEEKDAY.names),
    )
        .prop_map(|(a, b, c, d, e)| format!("{a} {b} {c} {d} {e}"))
}

proptest! {
    #[test]
    fn parser_never_panics(s in "\\PC{0,60}") {
        let _ = CronSchedule::parse(&s);
        let _ = CronSchedule::parse_for(&s, PgCronVersion::V1_4);
    }

    #[test]
    fn parser_never_panics_on_cron_alphabet(s in "[0-9*/,$@a-zA-Z -]{0,40}") {
        if let Ok(parsed) = CronSchedule::parse(&s) {
            let _ = parsed.next_runs_after(OffsetDateTime::UNIX_EPOCH, 2);
        }
    }

    /// Our own Vixie-rule matcher and croner (which computes previews)
    /// agree on every minute, so previews follow pg_cron's rules.
    #[test]
    fn previews_agree_with_the_pg_cron_rules(
        schedule in schedule_strategy(),
        minute in 0i64..(60 * 24 * 366 * 4),
    ) {
        let Ok(parsed) = CronSchedule::parse(&schedule) else { return Ok(()); };
        let t = datetime!(2024-01-01 00:00 UTC) + time::Duration::minutes(minute);
        let Kind::Cron { preview, .. } = &parsed.kind else { unreachable!() };
        prop_assert_eq!(parsed.fires_at(t), preview.matches(t), "{} at {}", schedule, t);
        // And the next preview is a firing minute, strictly later.
        if let Some(next) = parsed.next_runs_after(t, 1).first() {
            prop_assert!(*next > t && parsed.fires_at(*next));
        }
    }
}
