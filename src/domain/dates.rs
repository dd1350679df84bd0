//! The date formats the runs list accepts for `fromDate`/`toDate` (API.md §3): `20220221`,
//! `20220221T061500` (OpenSpecimen's documented forms), `2022-02-21 06:15` (its UI), `2022-02-21`,
//! RFC 3339 with an offset, and epoch milliseconds. Times without an offset are local to the given
//! zone. A date-only upper bound covers that whole day.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use chrono_tz::Tz;

/// Which end of a range a date bounds: a date-only `To` means the end of that day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    From,
    To,
}

pub const ACCEPTED_FORMATS: &str = "20220221, 20220221T061500, 2022-02-21 06:15, 2022-02-21, \
     2022-02-21T06:15:00+01:00 (RFC 3339) or epoch milliseconds";

/// Parses `text` to epoch milliseconds, or `None` when it matches no accepted format.
pub fn parse_date_param(text: &str, tz: Tz, bound: Bound) -> Option<i64> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let is_digits = text.bytes().all(|b| b.is_ascii_digit());
    if is_digits && text.len() == 8 {
        return date_only(NaiveDate::parse_from_str(text, "%Y%m%d").ok()?, tz, bound);
    }
    if is_digits {
        return text.parse::<i64>().ok();
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(text) {
        return Some(dt.timestamp_millis());
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return date_only(date, tz, bound);
    }
    const LOCAL_FORMATS: &[&str] = &[
        "%Y%m%dT%H%M%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S",
    ];
    LOCAL_FORMATS
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .map(|local| local_to_ms(local, tz))
}

fn date_only(date: NaiveDate, tz: Tz, bound: Bound) -> Option<i64> {
    let start = local_to_ms(date.and_time(NaiveTime::MIN), tz);
    match bound {
        Bound::From => Some(start),
        Bound::To => Some(local_to_ms(date.succ_opt()?.and_time(NaiveTime::MIN), tz) - 1),
    }
}

/// A local wall-clock time to an instant; a time skipped by DST moves forward past the gap, and
/// a repeated one takes its first occurrence.
pub fn local_to_ms(local: NaiveDateTime, tz: Tz) -> i64 {
    let mut probe = local;
    for _ in 0..4 {
        if let Some(dt) = tz.from_local_datetime(&probe).earliest() {
            return dt.timestamp_millis();
        }
        probe += Duration::minutes(30);
    }
    tz.from_utc_datetime(&local).timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::{America::New_York, Europe::Berlin, UTC};

    fn ms(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn openspecimen_documented_formats() {
        assert_eq!(
            parse_date_param("20220221", UTC, Bound::From),
            Some(ms("2022-02-21T00:00:00Z"))
        );
        assert_eq!(
            parse_date_param("20220221", UTC, Bound::To),
            Some(ms("2022-02-22T00:00:00Z") - 1)
        );
        assert_eq!(
            parse_date_param("20220221T061500", UTC, Bound::To),
            Some(ms("2022-02-21T06:15:00Z"))
        );
    }

    #[test]
    fn ui_and_iso_formats_in_the_given_zone() {
        assert_eq!(
            parse_date_param("2022-02-21 06:15", Berlin, Bound::From),
            Some(ms("2022-02-21T06:15:00+01:00"))
        );
        assert_eq!(
            parse_date_param("2022-07-01", New_York, Bound::From),
            Some(ms("2022-07-01T00:00:00-04:00"))
        );
        assert_eq!(
            parse_date_param("2022-02-21T06:15:00+05:30", Berlin, Bound::From),
            Some(ms("2022-02-21T06:15:00+05:30"))
        );
        assert_eq!(
            parse_date_param("1645424100000", Berlin, Bound::From),
            Some(1_645_424_100_000)
        );
    }

    #[test]
    fn garbage_is_rejected() {
        for bad in [
            "2022-13-01",
            "yesterday",
            "2022/02/21",
            "20221321",
            "20220221T25",
        ] {
            assert_eq!(parse_date_param(bad, UTC, Bound::From), None, "{bad}");
        }
    }

    #[test]
    fn a_time_in_the_spring_gap_moves_forward() {
        // 2026-03-29 02:30 does not exist in Berlin; the first valid instant is 03:00+02:00.
        assert_eq!(
            parse_date_param("2026-03-29 02:30", Berlin, Bound::From),
            Some(ms("2026-03-29T03:00:00+02:00"))
        );
    }
}
