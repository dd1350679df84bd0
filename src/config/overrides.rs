//! How settings are reached from outside the config file: every entry of `SETTING_SPECS` becomes a
//! `LABCRON_*` environment variable and a `--flag` (listed by `labcron --help`), and each given
//! value is written into the TOML table at its key before the table is read into `Settings`. So a
//! value from anywhere is checked the same way, and an error names the setting.

use std::path::Path;

use anyhow::bail;
use clap::{Arg, ArgAction, ArgMatches};

use super::specs::{SETTING_SPECS, SettingKind, SettingSpec};

/// `runs.max_concurrent` → `LABCRON_RUNS_MAX_CONCURRENT`.
pub fn env_name(key: &str) -> String {
    format!("LABCRON_{}", key.replace('.', "_").to_uppercase())
}

/// `runs.max_concurrent` → `runs-max-concurrent`.
pub fn flag_name(key: &str) -> String {
    key.replace(['.', '_'], "-")
}

fn find_spec(key: &str) -> Option<&'static SettingSpec> {
    SETTING_SPECS.iter().find(|s| s.key == key)
}

/// Writes `text` (converted by the setting's kind) into `table` at the dotted `key`.
pub fn apply_override(table: &mut toml::Table, key: &str, text: &str) -> anyhow::Result<()> {
    let Some(spec) = find_spec(key) else {
        bail!("unknown setting `{key}`");
    };
    let shown = if spec.secret { "(hidden)" } else { text };
    let where_from = format!("setting `{key}` ({} / --{})", env_name(key), flag_name(key));
    let value = match spec.kind {
        SettingKind::Text => toml::Value::String(text.to_string()),
        SettingKind::Integer => match text.trim().parse::<i64>() {
            Ok(n) => toml::Value::Integer(n),
            Err(_) => bail!("{where_from}: `{shown}` is not a whole number"),
        },
        SettingKind::Boolean => match text.trim() {
            "true" | "1" | "yes" | "on" => toml::Value::Boolean(true),
            "false" | "0" | "no" | "off" => toml::Value::Boolean(false),
            _ => bail!("{where_from}: `{shown}` is not true or false"),
        },
        SettingKind::List => toml::Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.into()))
                .collect(),
        ),
        SettingKind::Map => {
            let mut map = toml::Table::new();
            for pair in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let Some((name, value)) = pair.split_once('=') else {
                    let pair = if spec.secret { "(hidden)" } else { pair };
                    bail!("{where_from}: `{pair}` is not name=value");
                };
                map.insert(
                    name.trim().to_string(),
                    toml::Value::String(value.trim().to_string()),
                );
            }
            toml::Value::Table(map)
        }
    };
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap_or(key);
    let mut cursor = table;
    for part in parts {
        let entry = cursor
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(next) = entry else {
            bail!("setting `{key}`: `{part}` in the config file is not a section");
        };
        cursor = next;
    }
    cursor.insert(last.to_string(), value);
    Ok(())
}

/// A readable error for a table that does not fit `Settings`, naming the setting.
pub fn describe_error(error: &toml::de::Error, config: Option<&Path>) -> String {
    let source = config
        .map(|p| format!(" (config file {})", p.display()))
        .unwrap_or_default();
    format!("invalid settings{source}: {}", error.message())
}

/// One clap argument per setting, each with its environment variable.
pub fn settings_args() -> Vec<Arg> {
    SETTING_SPECS
        .iter()
        .map(|spec| {
            Arg::new(spec.key)
                .long(flag_name(spec.key))
                .env(env_name(spec.key))
                .hide_env_values(spec.secret)
                .value_name(match spec.kind {
                    SettingKind::Integer => "N",
                    SettingKind::Boolean => "BOOL",
                    SettingKind::List => "A,B",
                    SettingKind::Map => "NAME=PATH,…",
                    SettingKind::Text => "VALUE",
                })
                .help(spec.help)
                .action(ArgAction::Set)
                .global(true)
                .help_heading("Settings (also LABCRON_* environment variables and the config file)")
        })
        .collect()
}

/// The settings given on the command line or in the environment, as (key, text), in table order.
pub fn overrides_from_matches(matches: &ArgMatches) -> Vec<(String, String)> {
    SETTING_SPECS
        .iter()
        .filter_map(|spec| {
            // `try_`: a command without the settings (e.g. `user` above `user add`) has no such arg.
            matches
                .try_get_one::<String>(spec.key)
                .ok()
                .flatten()
                .map(|v| (spec.key.to_string(), v.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    /// Dotted keys of every leaf of a TOML table.
    fn leaves(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
        for (key, value) in table {
            let full = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                toml::Value::Table(inner) if find_spec(&full).is_none() => {
                    leaves(&full, inner, out)
                }
                _ => out.push(full),
            }
        }
    }

    #[test]
    fn every_setting_has_a_spec_and_every_spec_a_setting() {
        let defaults = toml::Table::try_from(Settings::default()).expect("settings serialize");
        let mut keys = Vec::new();
        leaves("", &defaults, &mut keys);
        for key in &keys {
            assert!(
                find_spec(key).is_some(),
                "setting `{key}` has no entry in SETTING_SPECS"
            );
        }
        for spec in SETTING_SPECS {
            let mut table = toml::Table::new();
            let sample = match spec.kind {
                SettingKind::Integer => "1",
                SettingKind::Boolean => "true",
                SettingKind::Map => "lab=lab.db",
                _ => "x",
            };
            apply_override(&mut table, spec.key, sample).unwrap();
            let result: Result<Settings, _> = toml::Value::Table(table).try_into();
            if let Err(e) = result {
                assert!(
                    !e.message().contains("unknown field"),
                    "SETTING_SPECS entry `{}` is not a setting: {e}",
                    spec.key
                );
            }
        }
    }

    #[test]
    fn the_example_file_documents_every_setting_and_parses() {
        let text = include_str!("../../labcron.example.toml");
        let mut section = String::new();
        let mut documented = Vec::new();
        let mut uncommented = String::new();
        for line in text.lines() {
            let bare = line.trim_start_matches('#').trim();
            if bare.starts_with('[') && bare.ends_with(']') && !bare.contains('=') {
                section = bare.trim_matches(['[', ']']).to_string();
                // A table-valued setting (query_sources) is documented by its section.
                documented.push(section.clone());
                uncommented.push_str(bare);
                uncommented.push('\n');
            } else if let Some((key, _)) = bare.split_once('=') {
                let key = key.trim();
                if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    documented.push(if section.is_empty() {
                        key.to_string()
                    } else {
                        format!("{section}.{key}")
                    });
                    uncommented.push_str(bare);
                    uncommented.push('\n');
                }
            }
        }
        for spec in SETTING_SPECS {
            assert!(
                documented.iter().any(|d| d == spec.key),
                "labcron.example.toml lacks `{}`",
                spec.key
            );
        }
        let all: Settings =
            toml::from_str(&uncommented).expect("the example, uncommented, is valid");
        all.validate().expect("the example's values are valid");
    }

    #[test]
    fn overrides_are_typed_and_errors_name_the_setting() {
        let mut table = toml::Table::new();
        apply_override(&mut table, "runs.max_concurrent", "3").unwrap();
        apply_override(
            &mut table,
            "http.cors_origins",
            "https://a.example, https://b.example",
        )
        .unwrap();
        apply_override(&mut table, "query_sources", "lab=/x/lab.db,bank=bank.db").unwrap();
        let settings: Settings = toml::Value::Table(table).try_into().unwrap();
        assert_eq!(settings.runs.max_concurrent, 3);
        assert_eq!(
            settings.http.cors_origins,
            vec!["https://a.example", "https://b.example"]
        );
        assert_eq!(settings.query_sources.len(), 2);

        let error =
            apply_override(&mut toml::Table::new(), "runs.max_concurrent", "many").unwrap_err();
        assert!(
            error.to_string().contains("LABCRON_RUNS_MAX_CONCURRENT"),
            "{error}"
        );
        let error = apply_override(&mut toml::Table::new(), "admin_password", "x").map(|_| ());
        assert!(error.is_ok());
        let error =
            Settings::load_from(None, &[("runs.max_concurrent".into(), "0".into())]).unwrap_err();
        assert!(error.to_string().contains("runs.max_concurrent"), "{error}");
        let error =
            Settings::load_from(None, &[("timezone".into(), "Mars/Olympus".into())]).unwrap_err();
        assert!(error.to_string().contains("timezone"), "{error}");
        let error = Settings::load_from(None, &[("bind".into(), "localhost".into())]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("setting `bind`: `localhost` is not an address like 127.0.0.1:8080"),
            "{error}"
        );
        let settings = Settings::load_from(None, &[("bind".into(), "0.0.0.0:9090".into())])
            .expect("an address");
        assert_eq!(settings.bind.port(), 9090);
    }

    #[test]
    fn names_follow_the_keys() {
        assert_eq!(
            env_name("runs.max_concurrent"),
            "LABCRON_RUNS_MAX_CONCURRENT"
        );
        assert_eq!(flag_name("runs.max_concurrent"), "runs-max-concurrent");
        assert_eq!(env_name("data_dir"), "LABCRON_DATA_DIR");
        assert_eq!(flag_name("data_dir"), "data-dir");
    }
}
