//! Named parameters of saved queries (`:from`, `@site`, `$days`) and the run arguments that fill
//! them. Arguments are `name=value` words (the job's `fixedArgs`, then the run's `rtArgs`; a later
//! word for the same name wins, so fixed arguments act as defaults). A value that is a whole
//! number in canonical form (`42`, `-7`, not `007`) is bound as an INTEGER, anything else as TEXT;
//! an empty value is the empty string. A missing or unknown parameter is an error naming it.
//! (A PostgreSQL source gets every value as text, typed by the server: see `postgres`.)

use std::collections::BTreeMap;

use rusqlite::Statement;
use rusqlite::types::Value;

/// A parameter name without its `:`, `@` or `$` prefix.
pub fn bare_name(name: &str) -> &str {
    name.strip_prefix([':', '@', '$']).unwrap_or(name)
}

/// Turns argument words into `name → value`. Words must be `name=value`; a leading `:`, `@` or
/// `$` on the name is allowed and ignored.
pub fn parse_args(words: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut values = BTreeMap::new();
    for word in words {
        let Some((name, value)) = word.split_once('=') else {
            return Err(format!(
                "argument `{word}` is not name=value (query parameters are given as e.g. from=2024-01-01)"
            ));
        };
        let name = bare_name(name.trim());
        if name.is_empty() {
            return Err(format!("argument `{word}` has no parameter name"));
        }
        values.insert(name.to_string(), value.to_string());
    }
    Ok(values)
}

/// The SQLite value an argument is bound as.
pub fn typed_value(text: &str) -> Value {
    match text.parse::<i64>() {
        Ok(n) if n.to_string() == text => Value::Integer(n),
        _ => Value::Text(text.to_string()),
    }
}

/// Binds every parameter of `stmt` from `args`. Fails, naming them all, when a parameter has no
/// value or an argument matches no parameter.
pub fn bind_params(
    stmt: &mut Statement<'_>,
    args: &BTreeMap<String, String>,
) -> Result<(), String> {
    let mut missing: Vec<String> = Vec::new();
    let mut used: Vec<&str> = Vec::new();
    let mut all: Vec<String> = Vec::new();
    for index in 1..=stmt.parameter_count() {
        let Some(full) = stmt.parameter_name(index).map(str::to_string) else {
            return Err(
                "the query has a positional parameter (`?`), which cannot be filled".into(),
            );
        };
        let name = bare_name(&full).to_string();
        if !all.contains(&full) {
            all.push(full.clone());
        }
        match args.get_key_value(&name) {
            Some((key, value)) => {
                stmt.raw_bind_parameter(index, typed_value(value))
                    .map_err(|e| format!("cannot bind parameter {full}: {e}"))?;
                used.push(key.as_str());
            }
            None => {
                if !missing.contains(&full) {
                    missing.push(full);
                }
            }
        }
    }
    let unknown: Vec<&str> = args
        .keys()
        .map(String::as_str)
        .filter(|k| !used.contains(k))
        .collect();
    problems(&missing, &unknown, &all)
}

/// The value of each parameter of `names` (bare names, as a PostgreSQL source's SQL has them as
/// `:name`), in order. Fails as `bind_params` does.
pub fn values_by_name<'a>(
    names: &[String],
    args: &'a BTreeMap<String, String>,
) -> Result<Vec<&'a str>, String> {
    let shown: Vec<String> = names.iter().map(|n| format!(":{n}")).collect();
    let mut values = Vec::with_capacity(names.len());
    let mut missing = Vec::new();
    for (name, shown) in names.iter().zip(&shown) {
        match args.get(name) {
            Some(value) => values.push(value.as_str()),
            None => missing.push(shown.clone()),
        }
    }
    let unknown: Vec<&str> = args
        .keys()
        .map(String::as_str)
        .filter(|k| !names.iter().any(|n| n == k))
        .collect();
    problems(&missing, &unknown, &shown)?;
    Ok(values)
}

/// The message naming missing and unknown parameters, if any.
fn problems(missing: &[String], unknown: &[&str], all: &[String]) -> Result<(), String> {
    let mut problems = Vec::new();
    if !missing.is_empty() {
        let hints: Vec<String> = missing
            .iter()
            .map(|p| format!("{}=<value>", bare_name(p)))
            .collect();
        problems.push(format!(
            "missing value for parameter {} (add {} to the run's arguments)",
            missing.join(", "),
            hints.join(" ")
        ));
    }
    if !unknown.is_empty() {
        let known = if all.is_empty() {
            "the query has no parameters".to_string()
        } else {
            format!("the query's parameters are {}", all.join(", "))
        };
        problems.push(format!(
            "unknown parameter {} ({known})",
            unknown.join(", ")
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn words(text: &str) -> Vec<String> {
        crate::domain::args::split_args(text).unwrap()
    }

    #[test]
    fn arguments_parse_and_later_words_win() {
        let args = parse_args(&words("from=2024-01-01 :site='Main lab' site=BOS empty=")).unwrap();
        assert_eq!(args["from"], "2024-01-01");
        assert_eq!(args["site"], "BOS");
        assert_eq!(args["empty"], "");
        assert!(
            parse_args(&words("from"))
                .unwrap_err()
                .contains("not name=value")
        );
        assert!(
            parse_args(&words("=3"))
                .unwrap_err()
                .contains("no parameter name")
        );
    }

    #[test]
    fn whole_numbers_bind_as_integers_other_values_as_text() {
        assert_eq!(typed_value("42"), Value::Integer(42));
        assert_eq!(typed_value("-7"), Value::Integer(-7));
        assert_eq!(typed_value("007"), Value::Text("007".into()));
        assert_eq!(typed_value("+7"), Value::Text("+7".into()));
        assert_eq!(typed_value("1.5"), Value::Text("1.5".into()));
        assert_eq!(typed_value(""), Value::Text(String::new()));
    }

    #[test]
    fn parameters_are_bound_by_name_whatever_their_prefix() {
        let conn = Connection::open_in_memory().unwrap();
        let mut stmt = conn
            .prepare("SELECT :a || '-' || @b, $c + 1, typeof(:a), :a")
            .unwrap();
        let args = parse_args(&words("a=007 b='x y' c=41")).unwrap();
        bind_params(&mut stmt, &args).unwrap();
        let mut rows = stmt.raw_query();
        let r = rows.next().unwrap().unwrap();
        let row: (String, i64, String, String) = (
            r.get(0).unwrap(),
            r.get(1).unwrap(),
            r.get(2).unwrap(),
            r.get(3).unwrap(),
        );
        assert_eq!(row, ("007-x y".into(), 42, "text".into(), "007".into()));
    }

    #[test]
    fn missing_and_unknown_parameters_are_named() {
        let conn = Connection::open_in_memory().unwrap();
        let mut stmt = conn.prepare("SELECT :from, :site").unwrap();
        let err =
            bind_params(&mut stmt, &parse_args(&words("from=1 sight=BOS")).unwrap()).unwrap_err();
        assert!(err.contains("missing value for parameter :site"), "{err}");
        assert!(err.contains("site=<value>"), "{err}");
        assert!(err.contains("unknown parameter sight"), "{err}");
        assert!(err.contains(":from, :site"), "{err}");

        let mut plain = conn.prepare("SELECT 1").unwrap();
        let err = bind_params(&mut plain, &parse_args(&words("x=1")).unwrap()).unwrap_err();
        assert!(err.contains("the query has no parameters"), "{err}");
        bind_params(&mut plain, &BTreeMap::new()).unwrap();
    }

    #[test]
    fn values_are_found_by_name_for_positional_sql() {
        let names = vec!["from".to_string(), "site".to_string()];
        let args = parse_args(&words("site=BOS from=2024-01-01")).unwrap();
        assert_eq!(
            values_by_name(&names, &args).unwrap(),
            ["2024-01-01", "BOS"]
        );
        let err =
            values_by_name(&names, &parse_args(&words("from=1 sight=x")).unwrap()).unwrap_err();
        assert!(err.contains("missing value for parameter :site"), "{err}");
        assert!(err.contains("unknown parameter sight"), "{err}");
        let err = values_by_name(&[], &parse_args(&words("x=1")).unwrap()).unwrap_err();
        assert!(err.contains("the query has no parameters"), "{err}");
    }
}
