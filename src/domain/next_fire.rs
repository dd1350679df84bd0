//! The next fire instant of a job's schedule: the calendar rules of every repeat kind, how they meet
//! daylight-saving changes in the schedule's time zone, and the start/end window. Pure and cheap:
//! the driver asks it at every fire, so nothing here steps minute by minute, and a CRON
//! expression is parsed once and kept (`CronCache`, keyed by its text, bounded) rather than at
//! every fire: parsing was 47 % of the CPU of a server firing 1,000 every-second CRON jobs.

use chrono::{
    DateTime, Datelike, Days, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone,
    Utc, Weekday,
};
use chrono_tz::Tz;
use croner::Cron;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use crate::domain::job::{Repeat, Schedule};
use crate::domain::schedule::parse_cron;

/// The first fire instant strictly after `after`, or `None` when the schedule never fires again.
pub fn next_fire(schedule: &Schedule, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    // Fires fall on whole milliseconds, so "strictly after `after`" is "at or after the next
    // millisecond"; `timestamp_millis` floors, which keeps that true for sub-millisecond `after`.
    let lower = after
        .timestamp_millis()
        .checked_add(1)?
        .max(schedule.start_date);
    let tz = schedule.timezone;
    let fire = match &schedule.repeat {
        Repeat::OnDemand => return None,
        Repeat::Minutely { interval } => {
            fixed_rate(tz, schedule.start_date, lower, 60, 0, *interval)?
        }
        Repeat::Hourly { interval, minute } => {
            if *minute > 59 {
                return None;
            }
            fixed_rate(
                tz,
                schedule.start_date,
                lower,
                3600,
                i64::from(*minute) * 60,
                *interval,
            )?
        }
        Repeat::Daily { hour, minute } => on_days(tz, lower, *hour, *minute, FireDays::Every)?,
        Repeat::Weekly { day, hour, minute } => {
            on_days(tz, lower, *hour, *minute, FireDays::Weekday(*day))?
        }
        Repeat::Monthly { day, hour, minute } => {
            if !(1..=31).contains(day) {
                return None;
            }
            on_days(tz, lower, *hour, *minute, FireDays::OfMonth(*day))?
        }
        Repeat::Cron { expression } => cron_next(tz, expression, lower)?,
    };
    if schedule
        .end_date
        .is_some_and(|end| fire.timestamp_millis() > end)
    {
        return None;
    }
    Some(fire)
}

/// The next `count` fire instants after `after`.
pub fn next_fires(schedule: &Schedule, after: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
    let mut out = Vec::with_capacity(count);
    let mut cursor = after;
    while out.len() < count {
        match next_fire(schedule, cursor) {
            Some(t) => {
                out.push(t);
                cursor = t;
            }
            None => break,
        }
    }
    out
}

/// MINUTELY and HOURLY: an absolute rate of `interval` periods from an anchor, the first instant at
/// or after `start` whose local wall clock is `target` seconds into a `period`. The first fire at
/// or after `lower` comes from division, however far `lower` lies from the anchor.
fn fixed_rate(
    tz: Tz,
    start: i64,
    lower: i64,
    period: i64,
    target: i64,
    interval: u32,
) -> Option<DateTime<Utc>> {
    let anchor = first_local_aligned(tz, start, period, target)?.checked_mul(1000)?;
    // Validation turns interval 0 into 1; a stored 0 means the same here rather than a stuck clock.
    let step = i64::from(interval.max(1)).checked_mul(period * 1000)?;
    let behind = lower.checked_sub(anchor)?;
    let steps = if behind <= 0 {
        0
    } else {
        (behind - 1) / step + 1
    };
    DateTime::from_timestamp_millis(anchor.checked_add(steps.checked_mul(step)?)?)
}

/// The first whole second at or after `start_ms` whose local time is `target` seconds past a
/// multiple of `period` (the start of a minute, or minute M of an hour). Computed within one UTC
/// offset at a time: when the candidate lies past an offset change, the search resumes at the
/// change with the new offset, since the old one has no candidate left before it.
fn first_local_aligned(tz: Tz, start_ms: i64, period: i64, target: i64) -> Option<i64> {
    let mut from = start_ms.div_euclid(1000) + i64::from(start_ms.rem_euclid(1000) != 0);
    // Each round crosses one offset change; real zones never change more than twice in an hour.
    for _ in 0..4 {
        let offset = utc_offset(tz, from)?;
        let candidate = from + (target - from - offset).rem_euclid(period);
        if utc_offset(tz, candidate)? == offset {
            return Some(candidate);
        }
        from = first_second_where(from, candidate, |s| utc_offset(tz, s) != Some(offset));
    }
    None
}

/// The zone's offset from UTC, in seconds, at an instant given in epoch seconds.
fn utc_offset(tz: Tz, secs: i64) -> Option<i64> {
    let utc = DateTime::from_timestamp(secs, 0)?;
    Some(i64::from(
        tz.offset_from_utc_datetime(&utc.naive_utc())
            .fix()
            .local_minus_utc(),
    ))
}

/// The wall-clock time of an instant in the zone; `None` at the edges of chrono's range, where
/// `with_timezone(..).naive_local()` would panic.
fn local_time(tz: Tz, utc: DateTime<Utc>) -> Option<NaiveDateTime> {
    utc.naive_utc()
        .checked_add_offset(tz.offset_from_utc_datetime(&utc.naive_utc()).fix())
}

/// Binary search for the second where `holds` turns true, given it is false at `lo` and true at
/// `hi`: the returned second `s` has `holds(s)` and not `holds(s - 1)`.
fn first_second_where(mut lo: i64, mut hi: i64, holds: impl Fn(i64) -> bool) -> i64 {
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if holds(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// Which local dates a DAILY, WEEKLY or MONTHLY schedule fires on.
#[derive(Clone, Copy)]
enum FireDays {
    Every,
    Weekday(Weekday),
    /// That day of the month, or the month's last day when it is shorter.
    OfMonth(u32),
}

impl FireDays {
    /// The first firing date on or after `from`.
    fn first_on_or_after(self, from: NaiveDate) -> Option<NaiveDate> {
        match self {
            FireDays::Every => Some(from),
            FireDays::Weekday(day) => {
                let ahead = (i64::from(day.num_days_from_monday())
                    - i64::from(from.weekday().num_days_from_monday()))
                .rem_euclid(7);
                from.checked_add_days(Days::new(ahead as u64))
            }
            FireDays::OfMonth(day) => {
                let this_month = NaiveDate::from_ymd_opt(
                    from.year(),
                    from.month(),
                    day.min(month_length(from)),
                )?;
                if this_month >= from {
                    return Some(this_month);
                }
                let next = from
                    .with_day(1)?
                    .checked_add_months(chrono::Months::new(1))?;
                NaiveDate::from_ymd_opt(next.year(), next.month(), day.min(month_length(next)))
            }
        }
    }
}

fn month_length(date: NaiveDate) -> u32 {
    u32::from(date.num_days_in_month())
}

/// DAILY, WEEKLY and MONTHLY: the first fire at or after `lower` at `hour:minute` local time on a
/// firing date.
fn on_days(tz: Tz, lower: i64, hour: u32, minute: u32, days: FireDays) -> Option<DateTime<Utc>> {
    let time = NaiveTime::from_hms_opt(hour, minute, 0)?;
    let lower_day = local_time(tz, DateTime::from_timestamp_millis(lower)?)?.date();
    // A gap can push a date's fire into the next local day, so a date just before `lower`'s may
    // still fire after `lower`. Fires rise with their dates, so the first one far enough is the answer.
    let mut from = lower_day.checked_sub_days(Days::new(2))?;
    // Two days back plus at most one month ahead: a handful of dates always suffices.
    for _ in 0..8 {
        let date = days.first_on_or_after(from)?;
        let fire = local_fire(tz, date.and_time(time))?;
        if fire.timestamp_millis() >= lower {
            return Some(fire);
        }
        from = date.succ_opt()?;
    }
    None
}

/// The instant a local wall-clock time fires: a time repeated when clocks fall back fires once, at
/// its first occurrence; a time skipped when clocks spring forward fires when the gap ends.
fn local_fire(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, second) => Some(first.min(second).with_timezone(&Utc)),
        LocalResult::None => gap_end(tz, local),
    }
}

/// The first instant whose local time is past `local`, which lies in a gap. Local time is the
/// instant plus an offset within a day either way, so the gap's end lies within a day of `local`
/// read as UTC; a binary search over that window finds the second the clock jumps over it.
fn gap_end(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    let reached = |secs: i64| {
        DateTime::from_timestamp(secs, 0)
            .and_then(|t| local_time(tz, t))
            .is_none_or(|wall| wall >= local)
    };
    let pivot = local.and_utc().timestamp();
    let (lo, hi) = (pivot.checked_sub(86_400)?, pivot.checked_add(86_400)?);
    if reached(lo) || !reached(hi) {
        return None;
    }
    DateTime::from_timestamp(first_second_where(lo, hi, reached), 0)
}

/// Parsed CRON expressions by their text: two generations of at most `CRON_CACHE_GENERATION`
/// each. A miss in the current one looks in the previous one (and moves the entry up); when the
/// current one is full it becomes the previous one and the oldest is dropped. So the expressions
/// in use stay, the cache never holds more than twice the generation, and a lookup that hits
/// allocates nothing. The value is `None` for an expression that never fires (invalid, or no
/// date matches it), so that is not parsed again either. Keyed by the text alone: the time zone
/// and the start/end window are applied afterwards, so a job's change of expression is a new key
/// and nothing needs invalidating.
struct CronCache {
    current: HashMap<String, Option<Arc<Cron>>>,
    previous: HashMap<String, Option<Arc<Cron>>>,
}

/// Distinct expressions per generation: far above what a ledger's jobs use in practice.
const CRON_CACHE_GENERATION: usize = 512;

static CRON_CACHE: LazyLock<Mutex<CronCache>> = LazyLock::new(|| {
    Mutex::new(CronCache {
        current: HashMap::new(),
        previous: HashMap::new(),
    })
});

fn cron_cache() -> std::sync::MutexGuard<'static, CronCache> {
    // The map is valid whatever a panicking holder left half done (an insert or a swap).
    CRON_CACHE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The parsed expression (`None` when it never fires), parsed at most once while it is in use.
fn parsed_cron(expression: &str) -> Option<Arc<Cron>> {
    {
        let mut cache = cron_cache();
        if let Some(found) = cache.current.get(expression) {
            return found.clone();
        }
        if let Some(found) = cache.previous.remove(expression) {
            cache.insert(expression, found.clone());
            return found;
        }
    }
    // Parsed outside the lock: other callers' hits do not wait for it.
    let parsed = parse_cron(expression)
        .ok()
        // croner gives up on a pattern no date can match (30 February) only after a search to
        // the year 5000 that takes milliseconds; this check takes microseconds.
        .filter(has_some_date)
        .map(Arc::new);
    cron_cache().insert(expression, parsed.clone());
    parsed
}

impl CronCache {
    fn insert(&mut self, expression: &str, parsed: Option<Arc<Cron>>) {
        if self.current.len() >= CRON_CACHE_GENERATION {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(expression.to_owned(), parsed);
    }
}

/// CRON: croner's next occurrence at or after `lower`, in the zone.
fn cron_next(tz: Tz, expression: &str, lower: i64) -> Option<DateTime<Utc>> {
    let cron = parsed_cron(expression)?;
    // croner counts whole seconds. Searching strictly after the second before `lower`, rather than
    // inclusively from `lower`, also finds a fire that a gap moved to exactly `lower`: croner meets
    // the skipped wall-clock time on its way from the earlier second.
    let lower_secs = lower.div_euclid(1000) + i64::from(lower.rem_euclid(1000) != 0);
    let mut origin = DateTime::from_timestamp(lower_secs - 1, 0)?;
    // croner searches the years 1 to 5000 and panics on instants at the very edge of chrono's
    // range, so the search starts no earlier than 2 January of year 1 and not at all past 4999.
    if origin.year() >= croner::YEAR_UPPER_LIMIT {
        return None;
    }
    if origin.year() <= croner::YEAR_LOWER_LIMIT {
        origin = origin.max(
            NaiveDate::from_ymd_opt(croner::YEAR_LOWER_LIMIT, 1, 2)?
                .and_time(NaiveTime::MIN)
                .and_utc(),
        );
    }
    let mut origin = origin.with_timezone(&tz);
    // One search should do; the bounded retry only guards against an answer before `lower`.
    for _ in 0..3 {
        let found = cron.find_next_occurrence(&origin, false).ok()?;
        if found.timestamp_millis() >= lower {
            return Some(found.with_timezone(&Utc));
        }
        origin = found;
    }
    None
}

/// Whether any calendar date matches the pattern's month, day-of-month and day-of-week fields.
/// Every (month, leap year or not, weekday of the 1st) combination recurs in the Gregorian cycle,
/// so trying each of them decides it; a matching pattern usually answers within the first month.
fn has_some_date(cron: &Cron) -> bool {
    let pattern = &cron.pattern;
    if pattern.is_dom_wildcard() && pattern.is_dow_wildcard() {
        return true;
    }
    for month in 1..=12u32 {
        if !pattern.month_match(month).unwrap_or(false) {
            continue;
        }
        // 2027 is a common year and 2028 a leap year; only February's length depends on which.
        let years: &[i32] = if month == 2 { &[2027, 2028] } else { &[2027] };
        for &year in years {
            let Some(length) = NaiveDate::from_ymd_opt(year, month, 1).map(month_length) else {
                continue;
            };
            for first in 0..7 {
                let first_weekday = croner::Weekday::from_days_from_sunday(first);
                for day in 1..=length {
                    let weekday = first_weekday.shift((day - 1) as i32);
                    if pattern
                        .day_match(year, month, day, weekday)
                        .unwrap_or(false)
                    {
                        return true;
                    }
                }
            }
        }
    }
    false
}

#[cfg(test)]
mod tests;
