//! Schedules as a scheduler uses them: parsed from text, next fire times in a zone across
//! daylight-saving changes, bad input named, and misfires settled once each.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code.

use std::time::Duration;

use clade_core::Timestamp;
use clade_sched::{Misfire, Schedule, ScheduleError, Zone};
use proptest::prelude::*;

/// An instant written as RFC 3339 (with its offset).
fn at(text: &str) -> Timestamp {
    let instant: jiff::Timestamp = text.parse().unwrap();
    Timestamp::from_millis(instant.as_millisecond())
}

fn next(schedule: &str, zone: &str, after: &str) -> Timestamp {
    let zone = Zone::parse(zone).unwrap();
    Schedule::parse(schedule).unwrap().next_after(at(after), &zone).unwrap()
}

fn fires(schedule: &str, zone: &str, after: &str, until: &str) -> Vec<Timestamp> {
    let zone = Zone::parse(zone).unwrap();
    Schedule::parse(schedule).unwrap().fires_between(at(after), at(until), &zone, 1000)
}

#[test]
fn fields_aliases_and_seconds_fire_when_they_say() {
    // Friday 2026-11-20, 10:00 in Berlin: weekdays at nine next fire on Monday.
    assert_eq!(
        next("0 9 * * MON-FRI", "Europe/Berlin", "2026-11-20T10:00:00+01:00"),
        at("2026-11-23T09:00:00+01:00")
    );
    assert_eq!(
        next("*/15 * * * * *", "UTC", "2026-11-20T10:00:07Z"),
        at("2026-11-20T10:00:15Z"),
        "a sixth field is seconds"
    );
    assert_eq!(next("@hourly", "UTC", "2026-11-20T10:00:00Z"), at("2026-11-20T11:00:00Z"));
    assert_eq!(next("@daily", "UTC", "2026-11-20T10:00:00Z"), at("2026-11-21T00:00:00Z"));
    assert_eq!(
        next("@weekly", "UTC", "2026-11-20T10:00:00Z"),
        at("2026-11-22T00:00:00Z"),
        "weeks start on Sunday"
    );
    assert_eq!(next("@monthly", "UTC", "2026-11-20T10:00:00Z"), at("2026-12-01T00:00:00Z"));
    assert_eq!(next("@yearly", "UTC", "2026-11-20T10:00:00Z"), at("2027-01-01T00:00:00Z"));
    assert_eq!(next("0 0 * * 7", "UTC", "2026-11-20T10:00:00Z"), at("2026-11-22T00:00:00Z"));
    assert_eq!(
        next("5/20 8-9 * * *", "UTC", "2026-11-20T08:50:00Z"),
        at("2026-11-20T09:05:00Z"),
        "5/20 is 5, 25 and 45"
    );
    // Both day fields restricted: either one fires (the 13th, and every Friday).
    assert_eq!(
        fires("0 0 13 * FRI", "UTC", "2026-11-01T00:00:00Z", "2026-11-30T00:00:00Z"),
        ["2026-11-06", "2026-11-13", "2026-11-20", "2026-11-27"]
            .map(|d| at(&format!("{d}T00:00:00Z")))
    );
    // The 29th of February comes in leap years only.
    assert_eq!(next("0 0 29 2 *", "UTC", "2026-01-01T00:00:00Z"), at("2028-02-29T00:00:00Z"));
    // An interval counts from the previous scheduled time.
    assert_eq!(next("@every 1h30m", "UTC", "2026-11-20T10:00:00Z"), at("2026-11-20T11:30:00Z"));
    // Strictly after: a schedule at its own time moves on.
    assert_eq!(next("0 * * * *", "UTC", "2026-11-20T10:00:00Z"), at("2026-11-20T11:00:00Z"));
}

/// Berlin springs forward on 2026-03-29 at 02:00 (to 03:00) and falls back on 2026-10-25 at
/// 03:00 (to 02:00). Each wall-clock time fires once: one skipped by the gap fires after it,
/// moved by the gap (RFC 5545), and one the fold repeats fires at its first occurrence.
#[test]
fn daylight_saving_changes_neither_skip_nor_repeat_a_fire() {
    let berlin = "Europe/Berlin";
    assert_eq!(
        fires("30 2 * * *", berlin, "2026-03-28T00:00:00Z", "2026-03-31T00:00:00Z"),
        [
            at("2026-03-28T02:30:00+01:00"),
            at("2026-03-29T03:30:00+02:00"),
            at("2026-03-30T02:30:00+02:00"),
        ],
        "the gap's 02:30 fires once, after the gap"
    );
    assert_eq!(
        fires("30 * * * *", berlin, "2026-03-29T00:00:00+01:00", "2026-03-29T05:00:00+02:00"),
        [
            at("2026-03-29T00:30:00+01:00"),
            at("2026-03-29T01:30:00+01:00"),
            at("2026-03-29T03:30:00+02:00"),
            at("2026-03-29T04:30:00+02:00"),
        ],
        "02:30 and 03:30 are one instant that day: it fires once"
    );
    assert_eq!(
        fires("30 2 * * *", berlin, "2026-10-24T00:00:00Z", "2026-10-27T00:00:00Z"),
        [
            at("2026-10-24T02:30:00+02:00"),
            at("2026-10-25T02:30:00+02:00"),
            at("2026-10-26T02:30:00+01:00"),
        ],
        "the fold's 02:30 fires once, at its first occurrence"
    );
    assert_eq!(
        fires("0 9 * * *", "America/New_York", "2026-03-07T00:00:00Z", "2026-03-10T00:00:00Z"),
        [
            at("2026-03-07T09:00:00-05:00"),
            at("2026-03-08T09:00:00-04:00"),
            at("2026-03-09T09:00:00-04:00"),
        ],
        "nine o'clock stays nine o'clock across the change"
    );
}

#[test]
fn bad_schedules_are_refused_naming_what_is_wrong() {
    let refused = |text: &str| Schedule::parse(text).unwrap_err();
    let says = |text: &str, words: &[&str]| {
        let message = refused(text).to_string();
        for word in words {
            assert!(message.contains(word), "{text:?}: {message}");
        }
    };
    assert_eq!(refused("  "), ScheduleError::Empty);
    assert!(matches!(refused("* * * *"), ScheduleError::FieldCount { found: 4, .. }));
    says("* * * * * * *", &["5 fields", "not 7"]);
    says("61 * * * *", &["minute", "61 is out of range 0-59"]);
    says("0 24 * * *", &["hour", "24 is out of range 0-23"]);
    says("0 0 0 * *", &["day-of-month", "0 is out of range 1-31"]);
    says("0 0 * 13 *", &["month", "13 is out of range 1-12"]);
    says("0 0 * * 8", &["day-of-week", "8 is out of range 0-7"]);
    says("0 0 * FOO *", &["month", "\"FOO\" is not a number", "JAN"]);
    says("5-1 * * * *", &["minute", "runs backwards"]);
    says("*/0 * * * *", &["step of 0"]);
    says("*/x * * * *", &["step \"x\""]);
    says("1,,2 * * * *", &["empty item"]);
    says("0 0 30 2 *", &["never fires", "day 30 never comes in February"]);
    says("0 0 31 4,6,9,11 *", &["never fires", "April, June, September, November"]);
    says("@fortnightly", &["unknown alias", "@every"]);
    says("@every", &["90s, 10m"]);
    says("@every 0s", &["shortest interval is 1s"]);
    says("@every 10x", &["units are s, m, h and d"]);
    says("@every 10", &["needs a unit"]);
    says("@every m", &["needs a number"]);
    says("@every 99999999999999999999d", &["too long"]);
    let zone = Zone::parse("Mars/Olympus_Mons").unwrap_err().to_string();
    assert!(zone.contains("Mars/Olympus_Mons") && zone.contains("Europe/Berlin"), "{zone}");
    assert_eq!(Zone::parse("UTC").unwrap().name(), "UTC");
}

fn minutes(n: u64) -> Duration {
    Duration::from_secs(60 * n)
}

/// A job every ten minutes, last settled at 12:00, looked at again at 13:05 with a minute's
/// grace: six times were missed.
#[test]
fn missed_times_follow_the_misfire_policy() {
    let schedule = Schedule::parse("*/10 * * * *").unwrap();
    let utc = Zone::utc();
    let settled = at("2026-11-20T12:00:00Z");
    let now = at("2026-11-20T13:05:00Z");
    let due = |policy: Misfire| policy.due(&schedule, &utc, settled, now, minutes(1));
    let times = |list: &[&str]| -> Vec<Timestamp> {
        list.iter().map(|t| at(&format!("2026-11-20T{t}:00Z"))).collect()
    };

    let skip = due(Misfire::Skip);
    assert_eq!((skip.fire.clone(), skip.skipped), (Vec::new(), 6));
    assert_eq!(skip.settled, at("2026-11-20T13:00:00Z"));
    assert_eq!(skip.next, Some(at("2026-11-20T13:10:00Z")));
    let once = due(Misfire::RunOnce);
    assert_eq!((once.fire, once.skipped), (times(&["13:00"]), 5));
    let three = due(Misfire::CatchUp(3));
    assert_eq!((three.fire, three.skipped), (times(&["12:40", "12:50", "13:00"]), 3));
    let all = due(Misfire::CatchUp(100));
    assert_eq!((all.fire.len(), all.skipped), (6, 0));

    // Looked at on time: the time that just came fires, whatever the policy.
    let on_time = Misfire::Skip.due(
        &schedule,
        &utc,
        at("2026-11-20T12:50:00Z"),
        at("2026-11-20T13:00:30Z"),
        minutes(1),
    );
    assert_eq!((on_time.fire, on_time.skipped), (times(&["13:00"]), 0));
    // Nothing due: nothing changes.
    let early = Misfire::Skip.due(
        &schedule,
        &utc,
        at("2026-11-20T13:00:00Z"),
        at("2026-11-20T13:05:00Z"),
        minutes(1),
    );
    assert_eq!((early.fire.len(), early.skipped), (0, 0));
    assert_eq!(early.settled, at("2026-11-20T13:00:00Z"));
    assert_eq!(early.next, Some(at("2026-11-20T13:10:00Z")));
}

/// A job down for a year, every second: each missed time is counted, none listed.
#[test]
fn a_long_outage_is_counted_without_listing_it() {
    let schedule = Schedule::parse("@every 1s").unwrap();
    let settled = at("2025-11-20T00:00:00Z");
    let now = at("2026-11-20T00:00:00Z");
    let due = Misfire::RunOnce.due(&schedule, &Zone::utc(), settled, now, Duration::ZERO);
    // The last missed second runs once; the second that is now is on time.
    assert_eq!(due.fire, [Timestamp::from_millis(now.as_millis() - 1000), now]);
    assert_eq!(due.skipped, 365 * 86_400 - 2);
}

const SCHEDULES: [(&str, &str); 5] = [
    ("*/7 * * * *", "UTC"),
    ("0 9 * * MON-FRI", "Europe/Berlin"),
    ("30 2 * * *", "Europe/Berlin"),
    ("@every 13m", "UTC"),
    ("15 */3 * * * *", "America/New_York"),
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// A scheduler that looks at a job at irregular times, with outages of up to two days,
    /// across both of a year's daylight-saving changes: every scheduled time is settled
    /// exactly once (fired or skipped), nothing fires twice, fires come in order, and the
    /// counts add up to the schedule's own list.
    #[test]
    fn every_scheduled_time_is_settled_once(
        which in 0..SCHEDULES.len(),
        policy in prop_oneof![Just(Misfire::Skip), Just(Misfire::RunOnce), (1u32..5).prop_map(Misfire::CatchUp)],
        start_day in 0i64..300,
        gaps in proptest::collection::vec(prop_oneof![9 => 1i64..900, 1 => 900i64..172_800], 50..400),
    ) {
        let (text, zone) = SCHEDULES[which];
        let schedule = Schedule::parse(text).unwrap();
        let zone = Zone::parse(zone).unwrap();
        let start = at("2026-01-01T00:00:00Z").as_millis() + start_day * 86_400_000;
        let mut settled = Timestamp::from_millis(start);
        let mut now = start;
        let (mut fired, mut skipped) = (Vec::new(), 0u64);
        for gap in gaps {
            now += gap * 1000;
            let due = policy.due(&schedule, &zone, settled, Timestamp::from_millis(now), Duration::from_secs(60));
            prop_assert!(due.settled >= settled);
            fired.extend(due.fire);
            skipped += due.skipped;
            settled = due.settled;
        }
        let all = schedule.fires_between(Timestamp::from_millis(start), settled, &zone, 1_000_000);
        prop_assert!(fired.windows(2).all(|w| w[0] < w[1]), "fired twice or out of order");
        prop_assert!(fired.iter().all(|t| all.binary_search(t).is_ok()), "fired off schedule");
        prop_assert_eq!(fired.len() as u64 + skipped, all.len() as u64);
    }
}

/// Jitter delays each fire by up to its window, by the same amount for the same job and time
/// (a restart or a second node computes the same), and spreads many jobs of one schedule.
#[test]
fn jitter_spreads_jobs_and_is_the_same_on_every_look() {
    use clade_sched::jobs::{JobSpec, MAX_JITTER_SECS, jitter_of, new_job};
    let now = Timestamp::from_millis(1_774_569_600_000);
    let tenant = clade_core::TenantId::generate(now);
    let agent = clade_core::AgentId::generate(now);
    let spec = |name: &str, jitter| JobSpec {
        name: name.into(),
        schedule: "0 9 * * *".into(),
        prompt: "morning".into(),
        jitter_secs: Some(jitter),
        ..JobSpec::default()
    };
    let nine = Timestamp::from_millis(now.as_millis() + 9 * 3_600_000);
    let mut offsets = std::collections::BTreeSet::new();
    for i in 0..200 {
        let job = new_job(&spec(&format!("j{i}"), 600), tenant, agent, now).unwrap();
        let next = job.next_at.unwrap();
        let offset = next.as_millis() - nine.as_millis();
        assert!((0..=600_000).contains(&offset), "{offset} ms outside the window");
        assert_eq!(jitter_of(job.id, nine, 600), next, "not the same on a second look");
        offsets.insert(offset / 1_000);
    }
    assert!(offsets.len() > 150, "200 jobs on {} seconds only", offsets.len());
    let plain = new_job(&spec("plain", 0), tenant, agent, now).unwrap();
    assert_eq!(plain.next_at, Some(nine));

    // A look at the jittered time fires the scheduled time (its key and record name it), and
    // waits for the next time's jitter.
    let job = new_job(&spec("late", 600), tenant, agent, now).unwrap();
    let row = clade_store::JobRow {
        id: job.id,
        tenant_id: tenant,
        agent_id: agent,
        agent: "ada".into(),
        name: job.name.clone(),
        schedule: job.schedule.clone(),
        zone: job.zone.clone(),
        misfire: "skip".into(),
        target: job.target.clone(),
        jitter_secs: 600,
        prompt: job.prompt.clone(),
        enabled: true,
        disabled_reason: None,
        enabled_at: now,
        settled_at: job.settled_at,
        next_at: job.next_at,
        skipped: 0,
        created_at: now,
    };
    // Even a short grace keeps a jittered fire on time (the `skip` policy would drop it).
    let settlement = clade_sched::scheduler::plan(
        &row,
        job.next_at.unwrap(),
        std::time::Duration::from_secs(1),
        10,
    )
    .unwrap();
    assert_eq!(settlement.fires, [nine]);
    let tomorrow = Timestamp::from_millis(nine.as_millis() + 86_400_000);
    assert_eq!(settlement.next_at, Some(jitter_of(job.id, tomorrow, 600)));

    let err = new_job(&spec("wild", MAX_JITTER_SECS + 1), tenant, agent, now).unwrap_err();
    assert!(err.to_string().contains("at most 3600 s"), "{err}");
}

/// The closest two fires of a schedule come, as the tenants' minimum interval reads it: the
/// finest field's step, a day's wrap from 23:59 to 00:00, `@every`'s period, and nothing for a
/// schedule that fires once in the sampled span.
#[test]
fn the_shortest_gap_between_fires_is_found() {
    let zone = Zone::parse("Europe/Berlin").unwrap();
    let gap =
        |text: &str| Schedule::parse(text).unwrap().shortest_gap(at("2026-11-20T10:00:07Z"), &zone);
    assert_eq!(gap("* * * * * *"), Some(Duration::from_secs(1)));
    assert_eq!(gap("*/15 * * * * *"), Some(Duration::from_secs(15)));
    assert_eq!(gap("* * * * *"), Some(Duration::from_secs(60)));
    assert_eq!(gap("0 0,30 9 * * MON"), Some(Duration::from_secs(30 * 60)));
    assert_eq!(gap("59,0 23,0 * * *"), Some(Duration::from_secs(60)), "23:59 then 00:00");
    assert_eq!(gap("@every 90s"), Some(Duration::from_secs(90)));
    assert_eq!(gap("@hourly"), Some(Duration::from_secs(3600)));
    assert_eq!(gap("@yearly"), Some(Duration::from_secs(365 * 86_400)));
    // Every second of the 29th of February: dense, but only in leap years.
    assert_eq!(gap("* * * 29 2 *"), Some(Duration::from_secs(1)));
}
