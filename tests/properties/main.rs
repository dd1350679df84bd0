//! Property tests (proptest) of the two hand-written parsers the API exposes to arbitrary input:
//! the runs list's date parser (`domain::dates`) and the argument splitter (`domain::args`).

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use labcron::domain::args::split_args;
use labcron::domain::dates::{Bound, parse_date_param};
use proptest::prelude::*;

/// `cases` random cases per property. Failures are not saved to a file: a case found once
/// becomes a unit test next to the code.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Zones with unusual rules: DST of 30 minutes, offsets of :45 and :30, DST at midnight, none.
const ZONES: &[Tz] = &[
    chrono_tz::UTC,
    chrono_tz::Europe::Berlin,
    chrono_tz::America::New_York,
    chrono_tz::America::Sao_Paulo,
    chrono_tz::Australia::Lord_Howe,
    chrono_tz::Asia::Kolkata,
    chrono_tz::Pacific::Chatham,
    chrono_tz::America::St_Johns,
];

fn zone() -> impl Strategy<Value = Tz> {
    proptest::sample::select(ZONES)
}

fn bound() -> impl Strategy<Value = Bound> {
    prop_oneof![Just(Bound::From), Just(Bound::To)]
}

/// Instants from 2001 to 2099 (epoch milliseconds with more than 8 digits: an 8-digit number is
/// read as a date, `20220221`).
fn instant() -> impl Strategy<Value = i64> {
    978_307_200_000i64..4_102_444_800_000i64
}

fn local(ms: i64, tz: Tz, format: &str) -> String {
    let utc: DateTime<Utc> = Utc
        .timestamp_millis_opt(ms)
        .single()
        .expect("valid instant");
    utc.with_timezone(&tz).format(format).to_string()
}

/// Text the parser should find interesting: digits, separators, letters of the formats.
fn date_like_text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[0-9T:+\\-. Zz]{0,30}").expect("regex")
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn the_date_parser_never_panics(text in any::<String>(), tz in zone(), bound in bound()) {
        let _ = parse_date_param(&text, tz, bound);
    }

    #[test]
    fn the_date_parser_never_panics_on_date_like_text(
        text in date_like_text(), tz in zone(), bound in bound()
    ) {
        let _ = parse_date_param(&text, tz, bound);
    }

    #[test]
    fn epoch_milliseconds_and_rfc3339_round_trip_exactly(
        ms in instant(), tz in zone(), bound in bound()
    ) {
        prop_assert_eq!(parse_date_param(&ms.to_string(), tz, bound), Some(ms));
        let rfc3339 = Utc.timestamp_millis_opt(ms).unwrap().with_timezone(&tz).to_rfc3339();
        // Any zone's header: the offset in the text decides.
        prop_assert_eq!(parse_date_param(&rfc3339, chrono_tz::UTC, bound), Some(ms), "{}", rfc3339);
        prop_assert_eq!(parse_date_param(&format!("  {rfc3339} "), tz, bound), Some(ms));
    }

    #[test]
    fn local_date_times_round_trip_to_the_same_wall_clock_time(
        ms in instant(), tz in zone(), bound in bound()
    ) {
        // Each local format, parsed in the zone and formatted again, gives the same text (a
        // repeated hour resolves to its first occurrence, which shows the same wall-clock time),
        // and the instant is within the format's precision of the original.
        for (format, precision_ms) in [
            ("%Y%m%dT%H%M%S", 1_000),
            ("%Y-%m-%d %H:%M", 60_000),
            ("%Y-%m-%d %H:%M:%S", 1_000),
            ("%Y-%m-%dT%H:%M", 60_000),
            ("%Y-%m-%dT%H:%M:%S", 1_000),
        ] {
            let text = local(ms, tz, format);
            let parsed = parse_date_param(&text, tz, bound);
            prop_assert!(parsed.is_some(), "{} ({}) was not accepted", text, format);
            let parsed = parsed.unwrap();
            prop_assert_eq!(local(parsed, tz, format), text.clone(), "{}", format);
            // A repeated hour may resolve an hour (Lord Howe: 30 minutes) earlier.
            let distance = ms - parsed;
            prop_assert!(
                (0..precision_ms).contains(&distance)
                    || (0..precision_ms + 3_600_000).contains(&distance),
                "{} → {} is {} ms from {}", text, parsed, distance, ms
            );
        }
    }

    #[test]
    fn a_date_covers_its_whole_local_day(ms in instant(), tz in zone()) {
        for format in ["%Y%m%d", "%Y-%m-%d"] {
            let text = local(ms, tz, format);
            let from = parse_date_param(&text, tz, Bound::From);
            let to = parse_date_param(&text, tz, Bound::To);
            prop_assert!(from.is_some() && to.is_some(), "{} not accepted", text);
            let (from, to) = (from.unwrap(), to.unwrap());
            prop_assert!(from <= ms && ms <= to, "{}: {} not in [{}, {}]", text, ms, from, to);
            // The day starts and ends on that date, and the next day starts right after it.
            prop_assert_eq!(local(from, tz, format), text.clone());
            prop_assert_eq!(local(to, tz, format), text.clone());
            prop_assert_ne!(local(to + 1, tz, format), text.clone());
        }
    }
}

/// Quotes a word for a POSIX shell: in single quotes, each `'` written as `'\''`.
fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Words a user might pass: anything but NUL (which no program can receive).
fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::string::string_regex("[^\\x00]{0,12}").expect("regex"),
        proptest::string::string_regex("[-a-z0-9_=./#'\"\\\\$;*` ]{0,12}").expect("regex"),
    ]
}

/// Argument strings with the characters that matter to the splitter.
fn args_text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-z#'\"\\\\ \t\n;$*`=-]{0,24}").expect("regex")
}

/// Characters that quoting, escaping and word splitting may consume; all others must survive.
fn is_syntax(c: char) -> bool {
    matches!(c, '\'' | '"' | '\\' | ' ' | '\t' | '\n')
}

fn count_content(text: &str) -> std::collections::BTreeMap<char, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for c in text.chars().filter(|c| !is_syntax(*c)) {
        *counts.entry(c).or_insert(0) += 1;
    }
    counts
}

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn the_splitter_never_panics(text in any::<String>()) {
        let _ = split_args(&text);
    }

    #[test]
    fn quoted_words_split_back_into_the_same_words(words in proptest::collection::vec(word(), 0..6)) {
        let line = words.iter().map(|w| shell_quote(w)).collect::<Vec<_>>().join(" ");
        prop_assert_eq!(split_args(&line), Ok(words.clone()), "{}", line);
        // Any run of spaces, tabs and newlines separates words just as well.
        let line = words.iter().map(|w| shell_quote(w)).collect::<Vec<_>>().join(" \t\n ");
        prop_assert_eq!(split_args(&format!("\n {line}\t")), Ok(words), "{}", line);
    }

    #[test]
    fn plain_words_split_on_blanks(
        words in proptest::collection::vec("[a-zA-Z0-9_=./:,+-]{1,10}", 0..6)
    ) {
        let line = words.join("  ");
        prop_assert_eq!(split_args(&line), Ok(words));
    }

    /// Nothing is silently dropped: when the splitter accepts a string, every character other
    /// than quotes, backslashes and blanks reaches the words (a shell comment would drop them).
    #[test]
    fn an_accepted_string_loses_no_character(text in args_text()) {
        if let Ok(words) = split_args(&text) {
            let joined: String = words.concat();
            prop_assert_eq!(
                count_content(&joined), count_content(&text),
                "{:?} became {:?}", text, words
            );
        }
    }
}
