//! The calendar tables of `next_fire`: every repeat kind, daylight-saving changes in several
//! zones, start/end windows and CRON expressions, each checked against instants written out by hand.

use super::*;
use chrono::{SecondsFormat, Timelike};

fn instant(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .with_timezone(&Utc)
}

fn zone(name: &str) -> Tz {
    name.parse().unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn minutely(interval: u32) -> Repeat {
    Repeat::Minutely { interval }
}
fn hourly(interval: u32, minute: u32) -> Repeat {
    Repeat::Hourly { interval, minute }
}
fn daily(hour: u32, minute: u32) -> Repeat {
    Repeat::Daily { hour, minute }
}
fn weekly(day: Weekday, hour: u32, minute: u32) -> Repeat {
    Repeat::Weekly { day, hour, minute }
}
fn monthly(day: u32, hour: u32, minute: u32) -> Repeat {
    Repeat::Monthly { day, hour, minute }
}
fn cron(expression: &str) -> Repeat {
    Repeat::Cron {
        expression: expression.to_string(),
    }
}

/// One table row: a schedule, the instant to search after, and the exact fires expected,
/// written in the schedule's zone. By default `after` is 1 ms before the start date and the
/// row asks for exactly as many fires as it lists; `then_none` asks for one more, which must
/// not come.
struct Case {
    name: &'static str,
    repeat: Repeat,
    zone: &'static str,
    start: &'static str,
    end: Option<&'static str>,
    after: Option<&'static str>,
    expected: &'static [&'static str],
    then_none: bool,
}

fn case(name: &'static str, repeat: Repeat, zone: &'static str, start: &'static str) -> Case {
    Case {
        name,
        repeat,
        zone,
        start,
        end: None,
        after: None,
        expected: &[],
        then_none: false,
    }
}

impl Case {
    fn end(mut self, end: &'static str) -> Self {
        self.end = Some(end);
        self
    }
    fn after(mut self, after: &'static str) -> Self {
        self.after = Some(after);
        self
    }
    fn fires(mut self, expected: &'static [&'static str]) -> Self {
        self.expected = expected;
        self
    }
    /// The listed fires are all there are.
    fn fires_only(mut self, expected: &'static [&'static str]) -> Self {
        self.expected = expected;
        self.then_none = true;
        self
    }
    fn schedule(&self) -> Schedule {
        Schedule {
            repeat: self.repeat.clone(),
            timezone: zone(self.zone),
            start_date: instant(self.start).timestamp_millis(),
            end_date: self.end.map(|e| instant(e).timestamp_millis()),
        }
    }
}

/// Runs every row and reports all mismatches together.
fn check(cases: Vec<Case>) {
    let mut failures = Vec::new();
    for case in &cases {
        let schedule = case.schedule();
        let after = match case.after {
            Some(a) => instant(a),
            None => instant(case.start) - chrono::Duration::milliseconds(1),
        };
        let count = case.expected.len() + usize::from(case.then_none);
        let fires = next_fires(&schedule, after, count);
        let got: Vec<String> = fires
            .iter()
            .map(|t| {
                t.with_timezone(&schedule.timezone)
                    .to_rfc3339_opts(SecondsFormat::AutoSi, false)
            })
            .collect();
        if got != case.expected {
            failures.push(format!(
                "{}:\n  expected {:?}\n       got {:?}",
                case.name, case.expected, got
            ));
        }
        // Each expected string is an exact instant, offsets included.
        for (fire, text) in fires.iter().zip(case.expected) {
            assert_eq!(*fire, instant(text), "{}", case.name);
        }
        assert_eq!(
            next_fire(&schedule, after),
            fires.first().copied(),
            "{}",
            case.name
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn on_demand_never_fires() {
    check(vec![
        case(
            "ondemand",
            Repeat::OnDemand,
            "UTC",
            "2026-01-01T00:00:00+00:00",
        )
        .fires_only(&[]),
    ]);
}

#[test]
fn minutely_table() {
    check(vec![
        case(
            "7: anchor is the next whole minute after an odd-second start",
            minutely(7),
            "UTC",
            "2026-01-10T09:58:17.250+00:00",
        )
        .after("2026-01-01T00:00:00+00:00")
        .fires(&[
            "2026-01-10T09:59:00+00:00",
            "2026-01-10T10:06:00+00:00",
            "2026-01-10T10:13:00+00:00",
            "2026-01-10T10:20:00+00:00",
        ]),
        case(
            "7: a start just past a whole minute anchors at the next one",
            minutely(7),
            "UTC",
            "2026-01-10T09:59:00.500+00:00",
        )
        .fires(&["2026-01-10T10:00:00+00:00", "2026-01-10T10:07:00+00:00"]),
        case(
            "45: counted from the anchor across midnight",
            minutely(45),
            "UTC",
            "2026-01-10T23:10:42+00:00",
        )
        .after("2026-01-11T00:30:00+00:00")
        .fires(&[
            "2026-01-11T00:41:00+00:00",
            "2026-01-11T01:26:00+00:00",
            "2026-01-11T02:11:00+00:00",
        ]),
        case(
            "7: months after the anchor",
            minutely(7),
            "UTC",
            "2026-01-01T00:00:00+00:00",
        )
        .after("2026-06-01T00:00:00+00:00")
        .fires(&["2026-06-01T00:01:00+00:00", "2026-06-01T00:08:00+00:00"]),
        case(
            "7: a start on a whole minute is the anchor and fires",
            minutely(7),
            "UTC",
            "2026-01-01T00:00:00+00:00",
        )
        .fires(&["2026-01-01T00:00:00+00:00", "2026-01-01T00:07:00+00:00"]),
        case(
            "7: after exactly on a fire gives the next",
            minutely(7),
            "UTC",
            "2026-01-01T00:00:00+00:00",
        )
        .after("2026-01-01T00:07:00+00:00")
        .fires(&["2026-01-01T00:14:00+00:00"]),
        case(
            "1: after a millisecond past a fire",
            minutely(1),
            "UTC",
            "2026-01-01T00:00:00+00:00",
        )
        .after("2026-01-01T00:07:00.001+00:00")
        .fires(&["2026-01-01T00:08:00+00:00"]),
        case(
            "0 is taken as 1",
            minutely(0),
            "UTC",
            "2026-01-01T00:00:30+00:00",
        )
        .fires(&["2026-01-01T00:01:00+00:00", "2026-01-01T00:02:00+00:00"]),
        case(
            "7: end exactly on a fire fires there last",
            minutely(7),
            "UTC",
            "2026-01-01T00:00:00+00:00",
        )
        .end("2026-01-01T00:21:00+00:00")
        .fires_only(&[
            "2026-01-01T00:00:00+00:00",
            "2026-01-01T00:07:00+00:00",
            "2026-01-01T00:14:00+00:00",
            "2026-01-01T00:21:00+00:00",
        ]),
        case(
            "7: end a millisecond before a fire",
            minutely(7),
            "UTC",
            "2026-01-01T00:00:00+00:00",
        )
        .end("2026-01-01T00:20:59.999+00:00")
        .fires_only(&[
            "2026-01-01T00:00:00+00:00",
            "2026-01-01T00:07:00+00:00",
            "2026-01-01T00:14:00+00:00",
        ]),
        case(
            "7: after the last fire before the end",
            minutely(7),
            "UTC",
            "2026-01-01T00:00:00+00:00",
        )
        .end("2026-01-01T00:21:00+00:00")
        .after("2026-01-01T00:21:00+00:00")
        .fires_only(&[]),
        case(
            "1440 is a fixed 24 h rate, not a wall-clock time",
            minutely(1440),
            "Europe/Berlin",
            "2026-03-28T12:00:00+01:00",
        )
        .fires(&[
            "2026-03-28T12:00:00+01:00",
            "2026-03-29T13:00:00+02:00",
            "2026-03-30T13:00:00+02:00",
        ]),
        case(
            "40: Berlin spring gap",
            minutely(40),
            "Europe/Berlin",
            "2026-03-29T01:00:00+01:00",
        )
        .fires(&[
            "2026-03-29T01:00:00+01:00",
            "2026-03-29T01:40:00+01:00",
            "2026-03-29T03:20:00+02:00",
            "2026-03-29T04:00:00+02:00",
        ]),
        case(
            "50: Berlin fall-back overlap",
            minutely(50),
            "Europe/Berlin",
            "2026-10-25T01:30:00+02:00",
        )
        .fires(&[
            "2026-10-25T01:30:00+02:00",
            "2026-10-25T02:20:00+02:00",
            "2026-10-25T02:10:00+01:00",
            "2026-10-25T03:00:00+01:00",
        ]),
        case(
            "45: New York spring gap",
            minutely(45),
            "America/New_York",
            "2026-03-08T01:00:00-05:00",
        )
        .fires(&[
            "2026-03-08T01:00:00-05:00",
            "2026-03-08T01:45:00-05:00",
            "2026-03-08T03:30:00-04:00",
            "2026-03-08T04:15:00-04:00",
        ]),
        case(
            "45: New York fall-back overlap",
            minutely(45),
            "America/New_York",
            "2026-11-01T00:30:00-04:00",
        )
        .fires(&[
            "2026-11-01T00:30:00-04:00",
            "2026-11-01T01:15:00-04:00",
            "2026-11-01T01:00:00-05:00",
            "2026-11-01T01:45:00-05:00",
            "2026-11-01T02:30:00-05:00",
        ]),
        case(
            "40: Sydney DST end (April)",
            minutely(40),
            "Australia/Sydney",
            "2026-04-05T01:00:00+11:00",
        )
        .fires(&[
            "2026-04-05T01:00:00+11:00",
            "2026-04-05T01:40:00+11:00",
            "2026-04-05T02:20:00+11:00",
            "2026-04-05T02:00:00+10:00",
            "2026-04-05T02:40:00+10:00",
        ]),
        case(
            "45: Kolkata",
            minutely(45),
            "Asia/Kolkata",
            "2026-01-10T09:58:17+05:30",
        )
        .fires(&[
            "2026-01-10T09:59:00+05:30",
            "2026-01-10T10:44:00+05:30",
            "2026-01-10T11:29:00+05:30",
        ]),
        case(
            "45: Adelaide DST start (October)",
            minutely(45),
            "Australia/Adelaide",
            "2026-10-04T01:20:00+09:30",
        )
        .fires(&[
            "2026-10-04T01:20:00+09:30",
            "2026-10-04T03:05:00+10:30",
            "2026-10-04T03:50:00+10:30",
        ]),
    ]);
}

#[test]
fn hourly_table() {
    check(vec![
        case(
            "5 at :20 across midnight",
            hourly(5, 20),
            "UTC",
            "2026-01-10T19:25:00+00:00",
        )
        .fires(&[
            "2026-01-10T20:20:00+00:00",
            "2026-01-11T01:20:00+00:00",
            "2026-01-11T06:20:00+00:00",
            "2026-01-11T11:20:00+00:00",
        ]),
        case(
            "5 at :20: a start on :20 is the anchor",
            hourly(5, 20),
            "UTC",
            "2026-01-10T20:20:00+00:00",
        )
        .fires(&["2026-01-10T20:20:00+00:00", "2026-01-11T01:20:00+00:00"]),
        case(
            "5 at :20: a month after the anchor",
            hourly(5, 20),
            "UTC",
            "2026-01-10T20:20:00+00:00",
        )
        .after("2026-02-10T00:00:00+00:00")
        .fires(&["2026-02-10T01:20:00+00:00", "2026-02-10T06:20:00+00:00"]),
        case(
            "3 at :00: start in the future, end exactly on a fire",
            hourly(3, 0),
            "UTC",
            "2026-05-01T10:30:00+00:00",
        )
        .end("2026-05-01T17:00:00+00:00")
        .after("2026-01-01T00:00:00+00:00")
        .fires_only(&[
            "2026-05-01T11:00:00+00:00",
            "2026-05-01T14:00:00+00:00",
            "2026-05-01T17:00:00+00:00",
        ]),
        case(
            "minute 60 never fires",
            hourly(1, 60),
            "UTC",
            "2026-01-01T00:00:00+00:00",
        )
        .fires_only(&[]),
        case(
            "1 at :30: New York spring gap",
            hourly(1, 30),
            "America/New_York",
            "2026-03-08T00:00:00-05:00",
        )
        .fires(&[
            "2026-03-08T00:30:00-05:00",
            "2026-03-08T01:30:00-05:00",
            "2026-03-08T03:30:00-04:00",
            "2026-03-08T04:30:00-04:00",
        ]),
        case(
            "1 at :30: New York fall-back fires 01:30 EDT and EST",
            hourly(1, 30),
            "America/New_York",
            "2026-11-01T00:00:00-04:00",
        )
        .fires(&[
            "2026-11-01T00:30:00-04:00",
            "2026-11-01T01:30:00-04:00",
            "2026-11-01T01:30:00-05:00",
            "2026-11-01T02:30:00-05:00",
        ]),
        case(
            "2 at :15: Berlin spring gap",
            hourly(2, 15),
            "Europe/Berlin",
            "2026-03-29T00:00:00+01:00",
        )
        .fires(&[
            "2026-03-29T00:15:00+01:00",
            "2026-03-29T03:15:00+02:00",
            "2026-03-29T05:15:00+02:00",
        ]),
        case(
            "1 at :00: Berlin fall-back fires 02:00 twice",
            hourly(1, 0),
            "Europe/Berlin",
            "2026-10-25T00:30:00+02:00",
        )
        .fires(&[
            "2026-10-25T01:00:00+02:00",
            "2026-10-25T02:00:00+02:00",
            "2026-10-25T02:00:00+01:00",
            "2026-10-25T03:00:00+01:00",
        ]),
        case(
            "1 at :30: Sydney DST end",
            hourly(1, 30),
            "Australia/Sydney",
            "2026-04-05T01:00:00+11:00",
        )
        .fires(&[
            "2026-04-05T01:30:00+11:00",
            "2026-04-05T02:30:00+11:00",
            "2026-04-05T02:30:00+10:00",
            "2026-04-05T03:30:00+10:00",
        ]),
        case(
            "1 at :00: Kolkata minute is local",
            hourly(1, 0),
            "Asia/Kolkata",
            "2026-01-10T09:58:17+05:30",
        )
        .fires(&["2026-01-10T10:00:00+05:30", "2026-01-10T11:00:00+05:30"]),
        case(
            "1 at :15: Adelaide DST start",
            hourly(1, 15),
            "Australia/Adelaide",
            "2026-10-04T00:20:00+09:30",
        )
        .fires(&[
            "2026-10-04T01:15:00+09:30",
            "2026-10-04T03:15:00+10:30",
            "2026-10-04T04:15:00+10:30",
        ]),
        case(
            "1 at :10: Lord Howe anchor found past a 30-minute shift",
            hourly(1, 10),
            "Australia/Lord_Howe",
            "2026-10-04T01:45:00+10:30",
        )
        .fires(&["2026-10-04T03:10:00+11:00", "2026-10-04T04:10:00+11:00"]),
        case(
            "1 at :10: Lord Howe keeps the absolute rate past a 30-minute shift",
            hourly(1, 10),
            "Australia/Lord_Howe",
            "2026-04-05T00:00:00+11:00",
        )
        .fires(&[
            "2026-04-05T00:10:00+11:00",
            "2026-04-05T01:10:00+11:00",
            "2026-04-05T01:40:00+10:30",
            "2026-04-05T02:40:00+10:30",
        ]),
    ]);
}

#[test]
fn daily_table() {
    check(vec![
        case(
            "after exactly on a fire",
            daily(9, 30),
            "UTC",
            "2026-01-01T00:00:00+00:00",
        )
        .after("2026-01-10T09:30:00+00:00")
        .fires(&["2026-01-11T09:30:00+00:00", "2026-01-12T09:30:00+00:00"]),
        case(
            "after a millisecond before a fire",
            daily(9, 30),
            "UTC",
            "2026-01-01T00:00:00+00:00",
        )
        .after("2026-01-10T09:29:59.999+00:00")
        .fires(&["2026-01-10T09:30:00+00:00"]),
        case(
            "start in the future",
            daily(9, 0),
            "UTC",
            "2026-05-01T12:00:00+00:00",
        )
        .after("2026-01-01T00:00:00+00:00")
        .fires(&["2026-05-02T09:00:00+00:00"]),
        case(
            "start and end exactly on fires",
            daily(9, 0),
            "UTC",
            "2026-05-01T09:00:00+00:00",
        )
        .end("2026-05-03T09:00:00+00:00")
        .after("2026-01-01T00:00:00+00:00")
        .fires_only(&[
            "2026-05-01T09:00:00+00:00",
            "2026-05-02T09:00:00+00:00",
            "2026-05-03T09:00:00+00:00",
        ]),
        case(
            "after the end",
            daily(9, 0),
            "UTC",
            "2026-05-01T09:00:00+00:00",
        )
        .end("2026-05-03T09:00:00+00:00")
        .after("2026-05-03T09:00:00+00:00")
        .fires_only(&[]),
        case(
            "end before start",
            daily(9, 0),
            "UTC",
            "2026-05-03T10:00:00+00:00",
        )
        .end("2026-05-03T09:00:00+00:00")
        .fires_only(&[]),
        case(
            "hour 24 never fires",
            daily(24, 0),
            "UTC",
            "2026-01-01T00:00:00+00:00",
        )
        .fires_only(&[]),
        case(
            "Berlin spring gap fires when the gap ends",
            daily(2, 30),
            "Europe/Berlin",
            "2026-03-27T00:00:00+01:00",
        )
        .fires(&[
            "2026-03-27T02:30:00+01:00",
            "2026-03-28T02:30:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-30T02:30:00+02:00",
        ]),
        case(
            "Berlin fall-back fires once",
            daily(2, 30),
            "Europe/Berlin",
            "2026-10-24T12:00:00+02:00",
        )
        .fires(&["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]),
        case(
            "Berlin: no second fire inside the overlap",
            daily(2, 30),
            "Europe/Berlin",
            "2026-10-01T00:00:00+02:00",
        )
        .after("2026-10-25T02:45:00+02:00")
        .fires(&["2026-10-26T02:30:00+01:00"]),
        case(
            "Berlin: after exactly on the overlap fire",
            daily(2, 30),
            "Europe/Berlin",
            "2026-10-01T00:00:00+02:00",
        )
        .after("2026-10-25T02:30:00+02:00")
        .fires(&["2026-10-26T02:30:00+01:00"]),
        case(
            "New York spring gap",
            daily(2, 15),
            "America/New_York",
            "2026-03-07T00:00:00-05:00",
        )
        .fires(&[
            "2026-03-07T02:15:00-05:00",
            "2026-03-08T03:00:00-04:00",
            "2026-03-09T02:15:00-04:00",
        ]),
        case(
            "New York fall-back fires once",
            daily(1, 15),
            "America/New_York",
            "2026-10-31T00:00:00-04:00",
        )
        .fires(&[
            "2026-10-31T01:15:00-04:00",
            "2026-11-01T01:15:00-04:00",
            "2026-11-02T01:15:00-05:00",
        ]),
        case(
            "Sydney DST start (October)",
            daily(2, 30),
            "Australia/Sydney",
            "2026-10-03T00:00:00+10:00",
        )
        .fires(&[
            "2026-10-03T02:30:00+10:00",
            "2026-10-04T03:00:00+11:00",
            "2026-10-05T02:30:00+11:00",
        ]),
        case(
            "Sydney DST end (April)",
            daily(2, 30),
            "Australia/Sydney",
            "2026-04-04T00:00:00+11:00",
        )
        .fires(&[
            "2026-04-04T02:30:00+11:00",
            "2026-04-05T02:30:00+11:00",
            "2026-04-06T02:30:00+10:00",
        ]),
        case(
            "Adelaide DST start",
            daily(2, 30),
            "Australia/Adelaide",
            "2026-10-03T00:00:00+09:30",
        )
        .fires(&[
            "2026-10-03T02:30:00+09:30",
            "2026-10-04T03:00:00+10:30",
            "2026-10-05T02:30:00+10:30",
        ]),
        case(
            "Adelaide DST end",
            daily(2, 30),
            "Australia/Adelaide",
            "2026-04-04T00:00:00+10:30",
        )
        .fires(&[
            "2026-04-04T02:30:00+10:30",
            "2026-04-05T02:30:00+10:30",
            "2026-04-06T02:30:00+09:30",
        ]),
        case(
            "Kolkata midnight is the previous UTC day",
            daily(0, 0),
            "Asia/Kolkata",
            "2026-01-01T00:00:00+05:30",
        )
        .after("2026-01-10T18:29:59+00:00")
        .fires(&["2026-01-11T00:00:00+05:30", "2026-01-12T00:00:00+05:30"]),
        case(
            "Havana gap at midnight",
            daily(0, 30),
            "America/Havana",
            "2026-03-07T00:00:00-05:00",
        )
        .fires(&[
            "2026-03-07T00:30:00-05:00",
            "2026-03-08T01:00:00-04:00",
            "2026-03-09T00:30:00-04:00",
        ]),
        case(
            "Havana overlap at midnight",
            daily(0, 30),
            "America/Havana",
            "2026-10-31T00:00:00-04:00",
        )
        .fires(&[
            "2026-10-31T00:30:00-04:00",
            "2026-11-01T00:30:00-04:00",
            "2026-11-02T00:30:00-05:00",
        ]),
        case(
            "Apia 2011: a whole skipped day fires when it ends",
            daily(9, 0),
            "Pacific/Apia",
            "2011-12-29T00:00:00-10:00",
        )
        .fires(&[
            "2011-12-29T09:00:00-10:00",
            "2011-12-31T00:00:00+14:00",
            "2011-12-31T09:00:00+14:00",
        ]),
    ]);
}

#[test]
fn weekly_table() {
    use Weekday::{Fri, Mon, Sun};
    check(vec![
        case(
            "after exactly on a fire",
            weekly(Mon, 8, 0),
            "UTC",
            "2026-01-01T00:00:00+00:00",
        )
        .after("2026-01-12T08:00:00+00:00")
        .fires(&["2026-01-19T08:00:00+00:00", "2026-01-26T08:00:00+00:00"]),
        case(
            "after on a later weekday",
            weekly(Mon, 8, 0),
            "UTC",
            "2026-01-01T00:00:00+00:00",
        )
        .after("2026-01-13T10:00:00+00:00")
        .fires(&["2026-01-19T08:00:00+00:00"]),
        case(
            "same day, earlier time",
            weekly(Mon, 8, 0),
            "UTC",
            "2026-01-01T00:00:00+00:00",
        )
        .after("2026-01-12T07:59:00+00:00")
        .fires(&["2026-01-12T08:00:00+00:00"]),
        case(
            "start and end",
            weekly(Mon, 8, 0),
            "UTC",
            "2026-01-12T08:00:00+00:00",
        )
        .end("2026-01-26T08:00:00+00:00")
        .after("2025-12-01T00:00:00+00:00")
        .fires_only(&[
            "2026-01-12T08:00:00+00:00",
            "2026-01-19T08:00:00+00:00",
            "2026-01-26T08:00:00+00:00",
        ]),
        case(
            "Berlin spring gap",
            weekly(Sun, 2, 30),
            "Europe/Berlin",
            "2026-03-20T00:00:00+01:00",
        )
        .fires(&[
            "2026-03-22T02:30:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-04-05T02:30:00+02:00",
        ]),
        case(
            "Berlin fall-back",
            weekly(Sun, 2, 30),
            "Europe/Berlin",
            "2026-10-20T00:00:00+02:00",
        )
        .fires(&["2026-10-25T02:30:00+02:00", "2026-11-01T02:30:00+01:00"]),
        case(
            "New York spring gap at 02:00",
            weekly(Sun, 2, 0),
            "America/New_York",
            "2026-03-01T03:00:00-05:00",
        )
        .fires(&["2026-03-08T03:00:00-04:00", "2026-03-15T02:00:00-04:00"]),
        case(
            "New York fall-back",
            weekly(Sun, 1, 30),
            "America/New_York",
            "2026-10-26T00:00:00-04:00",
        )
        .fires(&["2026-11-01T01:30:00-04:00", "2026-11-08T01:30:00-05:00"]),
        case(
            "Sydney DST start",
            weekly(Sun, 2, 30),
            "Australia/Sydney",
            "2026-09-28T00:00:00+10:00",
        )
        .fires(&["2026-10-04T03:00:00+11:00", "2026-10-11T02:30:00+11:00"]),
        case(
            "Sydney DST end",
            weekly(Sun, 2, 30),
            "Australia/Sydney",
            "2026-03-30T00:00:00+11:00",
        )
        .fires(&["2026-04-05T02:30:00+11:00", "2026-04-12T02:30:00+10:00"]),
        case(
            "Adelaide DST start",
            weekly(Sun, 2, 45),
            "Australia/Adelaide",
            "2026-09-28T00:00:00+09:30",
        )
        .fires(&["2026-10-04T03:00:00+10:30", "2026-10-11T02:45:00+10:30"]),
        case(
            "Kolkata",
            weekly(Fri, 23, 45),
            "Asia/Kolkata",
            "2026-01-10T00:00:00+05:30",
        )
        .fires(&["2026-01-16T23:45:00+05:30", "2026-01-23T23:45:00+05:30"]),
    ]);
}

#[test]
fn monthly_table() {
    check(vec![
        case(
            "31 falls back to the last day in Feb and Apr",
            monthly(31, 12, 0),
            "UTC",
            "2026-01-15T00:00:00+00:00",
        )
        .fires(&[
            "2026-01-31T12:00:00+00:00",
            "2026-02-28T12:00:00+00:00",
            "2026-03-31T12:00:00+00:00",
            "2026-04-30T12:00:00+00:00",
            "2026-05-31T12:00:00+00:00",
        ]),
        case(
            "31 across December",
            monthly(31, 12, 0),
            "UTC",
            "2026-11-15T00:00:00+00:00",
        )
        .fires(&[
            "2026-11-30T12:00:00+00:00",
            "2026-12-31T12:00:00+00:00",
            "2027-01-31T12:00:00+00:00",
        ]),
        case(
            "29 in common-year 2027",
            monthly(29, 12, 0),
            "UTC",
            "2027-01-30T00:00:00+00:00",
        )
        .fires(&["2027-02-28T12:00:00+00:00", "2027-03-29T12:00:00+00:00"]),
        case(
            "29 in leap-year 2028",
            monthly(29, 12, 0),
            "UTC",
            "2028-01-30T00:00:00+00:00",
        )
        .fires(&["2028-02-29T12:00:00+00:00", "2028-03-29T12:00:00+00:00"]),
        case(
            "30 in leap-year 2028",
            monthly(30, 12, 0),
            "UTC",
            "2028-02-01T00:00:00+00:00",
        )
        .fires(&["2028-02-29T12:00:00+00:00", "2028-03-30T12:00:00+00:00"]),
        case(
            "31 in leap-year 2028",
            monthly(31, 12, 0),
            "UTC",
            "2028-02-01T00:00:00+00:00",
        )
        .fires(&[
            "2028-02-29T12:00:00+00:00",
            "2028-03-31T12:00:00+00:00",
            "2028-04-30T12:00:00+00:00",
        ]),
        case(
            "after exactly on the clamped fire",
            monthly(31, 12, 0),
            "UTC",
            "2026-01-01T00:00:00+00:00",
        )
        .after("2026-02-28T12:00:00+00:00")
        .fires(&["2026-03-31T12:00:00+00:00"]),
        case(
            "after just before the clamped fire",
            monthly(31, 12, 0),
            "UTC",
            "2026-01-01T00:00:00+00:00",
        )
        .after("2026-02-28T11:59:59+00:00")
        .fires(&["2026-02-28T12:00:00+00:00"]),
        case(
            "1st at midnight, after exactly on a fire",
            monthly(1, 0, 0),
            "UTC",
            "2026-01-01T00:00:00+00:00",
        )
        .after("2026-03-01T00:00:00+00:00")
        .fires(&["2026-04-01T00:00:00+00:00"]),
        case(
            "start and end exactly on fires",
            monthly(15, 6, 0),
            "UTC",
            "2026-01-15T06:00:00+00:00",
        )
        .end("2026-03-15T06:00:00+00:00")
        .after("2025-01-01T00:00:00+00:00")
        .fires_only(&[
            "2026-01-15T06:00:00+00:00",
            "2026-02-15T06:00:00+00:00",
            "2026-03-15T06:00:00+00:00",
        ]),
        case(
            "day 0 never fires",
            monthly(0, 6, 0),
            "UTC",
            "2026-01-01T00:00:00+00:00",
        )
        .fires_only(&[]),
        case(
            "day 32 never fires",
            monthly(32, 6, 0),
            "UTC",
            "2026-01-01T00:00:00+00:00",
        )
        .fires_only(&[]),
        case(
            "Berlin: Feb clamp, then the spring gap",
            monthly(29, 2, 30),
            "Europe/Berlin",
            "2026-02-01T00:00:00+01:00",
        )
        .fires(&[
            "2026-02-28T02:30:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-04-29T02:30:00+02:00",
        ]),
        case(
            "Berlin fall-back",
            monthly(25, 2, 30),
            "Europe/Berlin",
            "2026-09-30T00:00:00+02:00",
        )
        .fires(&["2026-10-25T02:30:00+02:00", "2026-11-25T02:30:00+01:00"]),
        case(
            "New York spring gap",
            monthly(8, 2, 30),
            "America/New_York",
            "2026-02-15T00:00:00-05:00",
        )
        .fires(&["2026-03-08T03:00:00-04:00", "2026-04-08T02:30:00-04:00"]),
        case(
            "New York fall-back",
            monthly(1, 1, 30),
            "America/New_York",
            "2026-10-15T00:00:00-04:00",
        )
        .fires(&["2026-11-01T01:30:00-04:00", "2026-12-01T01:30:00-05:00"]),
        case(
            "Sydney DST start",
            monthly(4, 2, 30),
            "Australia/Sydney",
            "2026-09-15T00:00:00+10:00",
        )
        .fires(&["2026-10-04T03:00:00+11:00", "2026-11-04T02:30:00+11:00"]),
        case(
            "Sydney DST end",
            monthly(5, 2, 30),
            "Australia/Sydney",
            "2026-03-15T00:00:00+11:00",
        )
        .fires(&["2026-04-05T02:30:00+11:00", "2026-05-05T02:30:00+10:00"]),
        case(
            "Adelaide 31 across DST end",
            monthly(31, 2, 30),
            "Australia/Adelaide",
            "2026-03-15T00:00:00+10:30",
        )
        .fires(&["2026-03-31T02:30:00+10:30", "2026-04-30T02:30:00+09:30"]),
        case(
            "Kolkata 31",
            monthly(31, 23, 59),
            "Asia/Kolkata",
            "2026-04-01T00:00:00+05:30",
        )
        .fires(&["2026-04-30T23:59:00+05:30", "2026-05-31T23:59:00+05:30"]),
    ]);
}

#[test]
fn cron_expressions() {
    check(vec![
        case(
            "5 fields",
            cron("*/15 9-10 * * 1-5"),
            "UTC",
            "2026-01-01T00:00:00+00:00",
        )
        .after("2026-01-09T10:40:00+00:00")
        .fires(&[
            "2026-01-09T10:45:00+00:00",
            "2026-01-12T09:00:00+00:00",
            "2026-01-12T09:15:00+00:00",
        ]),
        case(
            "6 fields, seconds first",
            cron("30 0 12 * * *"),
            "UTC",
            "2026-01-01T00:00:00+00:00",
        )
        .after("2026-01-10T12:00:30+00:00")
        .fires(&["2026-01-11T12:00:30+00:00", "2026-01-12T12:00:30+00:00"]),
        case(
            "6 fields from a sub-second start",
            cron("*/20 * * * * *"),
            "UTC",
            "2026-01-01T00:00:00.500+00:00",
        )
        .fires(&[
            "2026-01-01T00:00:20+00:00",
            "2026-01-01T00:00:40+00:00",
            "2026-01-01T00:01:00+00:00",
        ]),
        case(
            "6 fields, after a millisecond before a fire",
            cron("*/20 * * * * *"),
            "UTC",
            "2026-01-01T00:00:00+00:00",
        )
        .after("2026-01-01T00:00:19.999+00:00")
        .fires(&["2026-01-01T00:00:20+00:00"]),
        case(
            "L is the last day of the month",
            cron("0 18 L * *"),
            "UTC",
            "2028-01-15T00:00:00+00:00",
        )
        .fires(&[
            "2028-01-31T18:00:00+00:00",
            "2028-02-29T18:00:00+00:00",
            "2028-03-31T18:00:00+00:00",
            "2028-04-30T18:00:00+00:00",
        ]),
        case(
            "nickname",
            cron("@monthly"),
            "UTC",
            "2026-01-15T00:00:00+00:00",
        )
        .fires(&["2026-02-01T00:00:00+00:00", "2026-03-01T00:00:00+00:00"]),
        case(
            "start and end exactly on fires",
            cron("0 12 * * *"),
            "UTC",
            "2026-05-01T12:00:00+00:00",
        )
        .end("2026-05-02T12:00:00+00:00")
        .after("2026-01-01T00:00:00+00:00")
        .fires_only(&["2026-05-01T12:00:00+00:00", "2026-05-02T12:00:00+00:00"]),
        case(
            "never matches: 30 Feb",
            cron("0 0 30 2 *"),
            "UTC",
            "2026-01-01T00:00:00+00:00",
        )
        .fires_only(&[]),
        case(
            "never matches: 31st of 30-day months",
            cron("0 0 31 4,6,9,11 *"),
            "UTC",
            "2026-01-01T00:00:00+00:00",
        )
        .fires_only(&[]),
        case(
            "never matches: 30 Feb AND Monday",
            cron("0 0 30 2 +1"),
            "UTC",
            "2026-01-01T00:00:00+00:00",
        )
        .fires_only(&[]),
        case(
            "rare but real: Friday 13th",
            cron("0 0 13 * +5"),
            "UTC",
            "2026-01-01T00:00:00+00:00",
        )
        .fires(&[
            "2026-02-13T00:00:00+00:00",
            "2026-03-13T00:00:00+00:00",
            "2026-11-13T00:00:00+00:00",
        ]),
        case(
            "invalid expression",
            cron("every day"),
            "UTC",
            "2026-01-01T00:00:00+00:00",
        )
        .fires_only(&[]),
        case(
            "empty expression",
            cron(""),
            "UTC",
            "2026-01-01T00:00:00+00:00",
        )
        .fires_only(&[]),
        case(
            "Berlin fixed time in the spring gap",
            cron("30 2 * * *"),
            "Europe/Berlin",
            "2026-03-28T00:00:00+01:00",
        )
        .fires(&[
            "2026-03-28T02:30:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-30T02:30:00+02:00",
        ]),
        case(
            "Berlin fixed time in the overlap fires once",
            cron("30 2 * * *"),
            "Europe/Berlin",
            "2026-10-24T12:00:00+02:00",
        )
        .fires(&["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]),
        case(
            "Berlin start exactly at the end of the gap",
            cron("30 2 * * *"),
            "Europe/Berlin",
            "2026-03-29T03:00:00+02:00",
        )
        .after("2026-03-01T00:00:00+01:00")
        .fires(&["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]),
        case(
            "New York interval across the spring gap",
            cron("*/30 * * * *"),
            "America/New_York",
            "2026-03-01T00:00:00-05:00",
        )
        .after("2026-03-08T01:15:00-05:00")
        .fires(&[
            "2026-03-08T01:30:00-05:00",
            "2026-03-08T03:00:00-04:00",
            "2026-03-08T03:30:00-04:00",
        ]),
        case(
            "New York interval fires in both halves of the overlap",
            cron("*/30 * * * *"),
            "America/New_York",
            "2026-10-01T00:00:00-04:00",
        )
        .after("2026-11-01T00:45:00-04:00")
        .fires(&[
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:30:00-04:00",
            "2026-11-01T01:00:00-05:00",
            "2026-11-01T01:30:00-05:00",
            "2026-11-01T02:00:00-05:00",
        ]),
        case(
            "Sydney fixed time in the October gap",
            cron("30 2 * * *"),
            "Australia/Sydney",
            "2026-10-03T00:00:00+10:00",
        )
        .fires(&["2026-10-03T02:30:00+10:00", "2026-10-04T03:00:00+11:00"]),
        case(
            "Adelaide hourly across the gap",
            cron("0 * * * *"),
            "Australia/Adelaide",
            "2026-10-04T00:30:00+09:30",
        )
        .fires(&[
            "2026-10-04T01:00:00+09:30",
            "2026-10-04T03:00:00+10:30",
            "2026-10-04T04:00:00+10:30",
        ]),
        case(
            "Kolkata",
            cron("0 9 * * *"),
            "Asia/Kolkata",
            "2026-01-01T00:00:00+05:30",
        )
        .after("2026-01-10T10:00:00+05:30")
        .fires(&["2026-01-11T09:00:00+05:30"]),
    ]);
}

#[test]
fn next_fires_returns_the_sequence_and_stops() {
    let schedule = case("", daily(9, 0), "UTC", "2026-05-01T09:00:00+00:00")
        .end("2026-05-04T09:00:00+00:00")
        .schedule();
    let after = instant("2026-04-01T00:00:00+00:00");
    assert!(next_fires(&schedule, after, 0).is_empty());
    assert_eq!(
        next_fires(&schedule, after, 2),
        vec![
            instant("2026-05-01T09:00:00+00:00"),
            instant("2026-05-02T09:00:00+00:00")
        ]
    );
    assert_eq!(next_fires(&schedule, after, 100).len(), 4);
}

/// Extreme instants and dates must give `None`, not a panic or a hang.
#[test]
fn extremes_do_not_panic() {
    let repeats = [
        Repeat::OnDemand,
        minutely(1),
        minutely(u32::MAX),
        hourly(u32::MAX, 59),
        daily(23, 59),
        weekly(Weekday::Sun, 0, 0),
        monthly(31, 23, 59),
        cron("* * * * *"),
    ];
    let afters = [
        DateTime::<Utc>::MIN_UTC,
        DateTime::<Utc>::MAX_UTC,
        instant("2026-01-01T00:00:00+00:00"),
    ];
    for repeat in &repeats {
        for start in [i64::MIN, i64::MAX, 0] {
            for end in [None, Some(i64::MIN), Some(i64::MAX)] {
                for after in afters {
                    for timezone in [
                        chrono_tz::UTC,
                        chrono_tz::Pacific::Kiritimati,
                        chrono_tz::Etc::GMTPlus12,
                    ] {
                        let schedule = Schedule {
                            repeat: repeat.clone(),
                            timezone,
                            start_date: start,
                            end_date: end,
                        };
                        if let Some(fire) = next_fire(&schedule, after) {
                            assert!(
                                fire > after && fire.timestamp_millis() >= start,
                                "{schedule:?} {after}"
                            );
                        }
                    }
                }
            }
        }
    }
    assert_eq!(
        next_fire(
            &case("", minutely(1), "UTC", "2026-01-01T00:00:00+00:00").schedule(),
            DateTime::<Utc>::MAX_UTC
        ),
        None
    );
}

/// Zones with unusual transitions: at midnight, 30-minute shifts, two-hour shifts, negative DST,
/// Ramadan suspensions, southern hemisphere.
const ODD_ZONES: &[&str] = &[
    "Europe/Berlin",
    "America/New_York",
    "Australia/Sydney",
    "Australia/Adelaide",
    "Australia/Lord_Howe",
    "America/Havana",
    "America/Santiago",
    "America/Asuncion",
    "Asia/Beirut",
    "Africa/Casablanca",
    "Antarctica/Troll",
    "Europe/Dublin",
    "Pacific/Chatham",
    "America/St_Johns",
    "Asia/Tehran",
    "Asia/Kolkata",
];

/// The local dates in 2024–2026 on which the zone's offset changes.
fn transition_days(tz: Tz) -> Vec<NaiveDate> {
    let mut days = Vec::new();
    let mut t = instant("2024-01-01T00:00:00+00:00");
    let mut offset = tz.offset_from_utc_datetime(&t.naive_utc()).fix();
    while t < instant("2027-01-01T00:00:00+00:00") {
        t += chrono::Duration::hours(1);
        let now = tz.offset_from_utc_datetime(&t.naive_utc()).fix();
        if now != offset {
            // The change lies within the last hour, so on this date or the one before.
            days.push(
                (t - chrono::Duration::hours(1))
                    .with_timezone(&tz)
                    .date_naive(),
            );
            days.push(t.with_timezone(&tz).date_naive());
            offset = now;
        }
    }
    days.dedup();
    days
}

/// croner's fixed-time DST handling is the contract for DAILY, WEEKLY and MONTHLY (gap: first
/// instant after it; overlap: first occurrence), so on every transition date of these zones the
/// equivalent cron patterns must agree fire for fire.
#[test]
fn calendar_kinds_agree_with_croner_on_transition_days() {
    let start = "2023-01-01T00:00:00+00:00";
    let mut compared = 0;
    for name in ODD_ZONES {
        let tz = zone(name);
        for day in transition_days(tz) {
            let midnight = day.and_time(NaiveTime::MIN).and_utc();
            for (hour, minute) in [
                (0, 0),
                (0, 30),
                (1, 0),
                (1, 30),
                (2, 0),
                (2, 30),
                (3, 15),
                (23, 45),
            ] {
                let dow = day.weekday().num_days_from_sunday();
                let mut pairs = vec![
                    (daily(hour, minute), format!("{minute} {hour} * * *"), 2, 4),
                    (
                        weekly(day.weekday(), hour, minute),
                        format!("{minute} {hour} * * {dow}"),
                        8,
                        2,
                    ),
                ];
                // Days past the 28th fall back to shorter months' last day, which cron's do not.
                if day.day() <= 28 {
                    pairs.push((
                        monthly(day.day(), hour, minute),
                        format!("{minute} {hour} {} * *", day.day()),
                        32,
                        2,
                    ));
                }
                if day.day() == month_length(day) {
                    pairs.push((
                        monthly(31, hour, minute),
                        format!("{minute} {hour} L * *"),
                        32,
                        2,
                    ));
                }
                for (repeat, expression, days_before, count) in pairs {
                    let after = midnight - chrono::Duration::days(days_before);
                    let ours = next_fires(
                        &case("", repeat.clone(), name, start).schedule(),
                        after,
                        count,
                    );
                    let theirs = next_fires(
                        &case("", cron(&expression), name, start).schedule(),
                        after,
                        count,
                    );
                    assert_eq!(ours.len(), count, "{name} {repeat:?}");
                    assert_eq!(ours, theirs, "{name} {day} {repeat:?} vs {expression}");
                    compared += count;
                }
            }
        }
    }
    assert!(compared > 5_000, "{compared}");
}

/// MINUTELY and HOURLY fire at whole local minutes, exactly `interval` apart in absolute time,
/// from the first qualifying instant at or after the start.
#[test]
fn fixed_rates_keep_their_period_everywhere() {
    let starts = [
        "2026-03-07T13:17:41.123+00:00",
        "2026-10-03T22:59:59.999+00:00",
        "2026-04-04T14:00:00+00:00",
    ];
    for name in ODD_ZONES {
        let tz = zone(name);
        for start in starts {
            for (repeat, period) in [
                (minutely(7), 7 * 60),
                (minutely(45), 45 * 60),
                (hourly(1, 30), 3600),
                (hourly(5, 0), 5 * 3600),
            ] {
                let schedule = case("", repeat.clone(), name, start).schedule();
                let fires = next_fires(
                    &schedule,
                    instant(start) - chrono::Duration::milliseconds(1),
                    400,
                );
                assert_eq!(fires.len(), 400);
                let first = fires[0].timestamp_millis() - schedule.start_date;
                assert!(
                    (0..period * 1000).contains(&first),
                    "{name} {repeat:?} {start}: first fire {}",
                    fires[0]
                );
                for pair in fires.windows(2) {
                    assert_eq!(
                        (pair[1] - pair[0]).num_seconds(),
                        period,
                        "{name} {repeat:?}"
                    );
                }
                let local = fires[0].with_timezone(&tz);
                assert_eq!(local.second(), 0);
                if let Repeat::Hourly { minute, .. } = repeat {
                    assert_eq!(local.minute(), minute, "{name} {start}");
                }
            }
        }
    }
}

/// The parsed-expression cache: an expression answers the same from the cache as parsed afresh,
/// an invalid or never-matching one stays `None`, and however many distinct expressions pass
/// through, the cache holds at most two generations (other tests share it, which only adds).
#[test]
fn cron_cache_answers_as_parsing_does_and_stays_bounded() {
    let after = instant("2026-03-29T00:59:59Z");
    let schedule = |expression: &str| Schedule {
        repeat: cron(expression),
        timezone: zone("Europe/Berlin"),
        start_date: 0,
        end_date: None,
    };
    let first = next_fires(&schedule("30 2 * * *"), after, 3);
    // Parsed again after thousands of other expressions pushed it out of both generations.
    for minute in 0..60 {
        for hour in 0..60 {
            let expression = format!("{minute} {} * * * *", hour % 24);
            assert!(parsed_cron(&expression).is_some(), "{expression}");
        }
    }
    {
        let cache = cron_cache();
        assert!(cache.current.len() <= CRON_CACHE_GENERATION);
        assert!(cache.previous.len() <= CRON_CACHE_GENERATION);
    }
    assert_eq!(next_fires(&schedule("30 2 * * *"), after, 3), first);
    // 02:30 does not exist in Berlin on 29 March 2026: the fire is at the gap's end (03:00 CEST).
    assert_eq!(first[0], instant("2026-03-29T01:00:00Z"));
    assert_eq!(first[1], instant("2026-03-30T00:30:00Z"));
    for never in ["0 0 30 2 *", "not a cron", "61 * * * *"] {
        for _ in 0..2 {
            assert_eq!(next_fire(&schedule(never), after), None, "{never}");
        }
    }
}
