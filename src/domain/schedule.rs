//! CRON expressions as labcron accepts them (croner's parser with optional seconds, no year). Pure:
//! the job validation and the scheduler's `next_fire` both parse through here.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// Parses a CRON job's expression: 5 fields, or 6 with seconds first; `L`, `#` and `W` allowed;
/// day-of-month and day-of-week combine with OR as in Vixie cron.
pub fn parse_cron(expression: &str) -> Result<Cron, String> {
    let fields = expression.split_whitespace().count();
    if !(5..=6).contains(&fields) && !expression.trim_start().starts_with('@') {
        return Err(format!("expected 5 or 6 fields, found {fields}"));
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expression)
        .map_err(|e| e.to_string())
}

/// Checks a CRON expression, giving the parser's reason when it is invalid.
pub fn validate_cron(expression: &str) -> Result<(), String> {
    if expression.trim().is_empty() {
        return Err("a CRON job needs cronExpression".into());
    }
    parse_cron(expression).map(|_| ())
}
