//! Setting values that are parsed once, when the settings are read, instead of being checked as
//! text and re-read later: the log format, how SMTP is secured, the server's time zone and the
//! address it listens on. A wrong value fails the load with a message naming the setting.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An enum setting: its variants with their spelling in the settings, and the key it is read at.
macro_rules! setting_enum {
    ($(#[$meta:meta])* $name:ident at $key:literal { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                match text.as_str() {
                    $($text => Ok($name::$variant),)+
                    other => Err(D::Error::custom(format!(
                        "setting `{}`: `{other}` is not {}",
                        $key,
                        [$(concat!("`", $text, "`")),+].join(" or ")
                    ))),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

setting_enum!(
    /// How log lines are written (`log_format`).
    LogFormat at "log_format" {
        /// Readable lines.
        Text => "text",
        /// One JSON object per line.
        Json => "json",
    }
);

setting_enum!(
    /// How the SMTP connection is secured (`notifications.smtp_security`).
    SmtpSecurity at "notifications.smtp_security" {
        /// Plain SMTP.
        None => "none",
        /// Upgraded with STARTTLS, which the server must offer.
        StartTls => "starttls",
        /// TLS from the first byte.
        Tls => "tls",
    }
);

impl SmtpSecurity {
    /// The usual port of this kind of connection.
    pub fn default_port(self) -> u16 {
        match self {
            SmtpSecurity::None => 25,
            SmtpSecurity::StartTls => 587,
            SmtpSecurity::Tls => 465,
        }
    }
}

/// `timezone`: an IANA zone name, kept parsed.
pub mod zone {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<chrono_tz::Tz, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|_| {
            D::Error::custom(format!(
                "setting `timezone`: `{text}` is not an IANA time zone name"
            ))
        })
    }

    pub fn serialize<S: Serializer>(zone: &chrono_tz::Tz, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(zone.name())
    }
}

/// `bind`: the address and port to listen on, kept parsed.
pub mod socket {
    use super::*;
    use std::net::SocketAddr;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|_| {
            D::Error::custom(format!(
                "setting `bind`: `{text}` is not an address like 127.0.0.1:8080"
            ))
        })
    }

    pub fn serialize<S: Serializer>(addr: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&addr.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Serialize, Debug)]
    struct Probe {
        log_format: LogFormat,
        smtp_security: SmtpSecurity,
        #[serde(with = "zone")]
        timezone: chrono_tz::Tz,
        #[serde(with = "socket", default = "loopback")]
        bind: std::net::SocketAddr,
    }

    fn loopback() -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], 8080))
    }

    #[test]
    fn values_read_parsed_and_a_wrong_one_names_its_setting() {
        let probe: Probe = toml::from_str(
            "log_format = \"json\"\nsmtp_security = \"tls\"\ntimezone = \"Europe/Berlin\"",
        )
        .unwrap();
        assert_eq!(probe.log_format, LogFormat::Json);
        assert_eq!(probe.smtp_security.default_port(), 465);
        assert_eq!(probe.timezone, chrono_tz::Europe::Berlin);
        let bound: Probe = toml::from_str(
            "log_format = \"json\"\nsmtp_security = \"tls\"\ntimezone = \"UTC\"\nbind = \"[::1]:9000\"",
        )
        .unwrap();
        assert_eq!(
            bound.bind,
            std::net::SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 9000))
        );
        let text = toml::to_string(&probe).unwrap();
        assert!(text.contains("timezone = \"Europe/Berlin\""), "{text}");
        for (toml_text, says) in [
            (
                "log_format = \"xml\"\nsmtp_security = \"tls\"\ntimezone = \"UTC\"",
                "setting `log_format`: `xml` is not `text` or `json`",
            ),
            (
                "log_format = \"text\"\nsmtp_security = \"ssl\"\ntimezone = \"UTC\"",
                "setting `notifications.smtp_security`: `ssl` is not `none` or `starttls` or `tls`",
            ),
            (
                "log_format = \"text\"\nsmtp_security = \"tls\"\ntimezone = \"Mars/Olympus\"",
                "setting `timezone`: `Mars/Olympus` is not an IANA time zone name",
            ),
            (
                "log_format = \"text\"\nsmtp_security = \"tls\"\ntimezone = \"UTC\"\nbind = \"localhost\"",
                "setting `bind`: `localhost` is not an address like 127.0.0.1:8080",
            ),
        ] {
            let error = toml::from_str::<Probe>(toml_text).unwrap_err();
            assert!(error.message().contains(says), "{}", error.message());
        }
    }
}
