//! The broker's command line, parsed by hand: two options do not justify a
//! command-line framework, which was a twelfth of the binary.

use std::ffi::OsString;
use std::path::PathBuf;

pub const USAGE: &str = "\
BlipMQ message broker

Usage: blipmq [start] [OPTIONS]
       blipmq keygen [NAME]
       blipmq healthcheck [--http ADDR] [-c PATH]

Commands:
  start   Run the broker (the default when no command is given); SIGHUP reads
          the TLS files and the users of [auth] again
  keygen  Make a new random API key and print it with the [[auth.users]]
          entry (its SHA-256) that admits it, for a user called NAME
  healthcheck
          Ask a running broker's GET /readyz: exit 0 when it answers 200,
          1 otherwise, with a line saying why. --http ADDR (host:port, or
          https://host:port) names the HTTP port; without it,
          metrics.bind_addr of the config (HTTPS when [tls] covers it,
          trusting exactly tls.cert_file)
  help    Print this help

Options:
  -c, --config <PATH>        Config file; without one the built-in defaults apply
                             [env: BLIPMQ_CONFIG]
      --log-format <FORMAT>  Log line format: text or json; the level comes from
                             RUST_LOG (default: info) [env: BLIPMQ_LOG_FORMAT]
                             [default: text]
  -h, --help                 Print help
  -V, --version              Print version
";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `blipmq healthcheck`: which HTTP port to ask.
#[derive(Debug, PartialEq, Default)]
pub struct HealthcheckOptions {
    /// `--http ADDR`; unset = the config's `metrics.bind_addr`.
    pub http: Option<String>,
    pub config: Option<PathBuf>,
}

#[derive(Debug, PartialEq, Default)]
pub struct StartOptions {
    pub config: Option<PathBuf>,
    pub log_format: LogFormat,
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum Invocation {
    Start(StartOptions),
    /// `blipmq keygen [NAME]`.
    Keygen(Option<String>),
    Healthcheck(HealthcheckOptions),
    Help,
    Version,
}

/// Parse the arguments after the program name; `env` supplies the
/// `BLIPMQ_CONFIG` and `BLIPMQ_LOG_FORMAT` fallbacks. `Err` is the message
/// for a usage error.
pub fn parse(
    args: impl IntoIterator<Item = OsString>,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<Invocation, String> {
    let mut args = args.into_iter();
    let mut config: Option<PathBuf> = None;
    let mut log_format: Option<String> = None;
    let mut seen_command = false;
    let mut healthcheck = false;
    let mut http: Option<String> = None;
    while let Some(arg) = args.next() {
        let Some(text) = arg.to_str() else {
            return Err(format!("unexpected argument {arg:?}"));
        };
        let (flag, inline) = match text.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_owned())),
            _ => (text, None),
        };
        match flag {
            "-h" | "--help" => return Ok(Invocation::Help),
            "-V" | "--version" => return Ok(Invocation::Version),
            "-c" | "--config" => {
                let value = match inline {
                    Some(value) => OsString::from(value),
                    None => args
                        .next()
                        .ok_or_else(|| format!("{flag} needs a value: {flag} <PATH>"))?,
                };
                config = Some(PathBuf::from(value));
            }
            "--log-format" => {
                let value = match inline {
                    Some(value) => value,
                    None => args
                        .next()
                        .and_then(|v| v.into_string().ok())
                        .ok_or_else(|| format!("{flag} needs a value: text or json"))?,
                };
                log_format = Some(value);
            }
            "--http" if healthcheck => {
                let value = match inline {
                    Some(value) => value,
                    None => args
                        .next()
                        .and_then(|v| v.into_string().ok())
                        .ok_or_else(|| format!("{flag} needs a value: {flag} <HOST:PORT>"))?,
                };
                http = Some(value);
            }
            "help" if !seen_command => return Ok(Invocation::Help),
            "healthcheck" if !seen_command => {
                seen_command = true;
                healthcheck = true;
            }
            "keygen" if !seen_command => {
                let name = args.next().map(|n| {
                    n.into_string()
                        .map_err(|n| format!("the user's name {n:?} is not UTF-8"))
                });
                let name = name.transpose()?;
                if let Some(extra) = args.next() {
                    return Err(format!("unexpected argument {extra:?} after keygen's NAME"));
                }
                return Ok(Invocation::Keygen(name));
            }
            "start" if !seen_command => seen_command = true,
            other if other.starts_with('-') => {
                return Err(format!("unexpected argument '{other}'"));
            }
            other => {
                let hint = if seen_command {
                    ""
                } else {
                    " (the commands are 'start', 'keygen' and 'healthcheck')"
                };
                return Err(format!("unexpected argument '{other}'{hint}"));
            }
        }
    }
    let config = config.or_else(|| {
        env("BLIPMQ_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    if healthcheck {
        return Ok(Invocation::Healthcheck(HealthcheckOptions { http, config }));
    }
    let log_format = match log_format {
        Some(value) => Some(value),
        None => match env("BLIPMQ_LOG_FORMAT").filter(|v| !v.is_empty()) {
            Some(value) => Some(
                value
                    .into_string()
                    .map_err(|v| format!("BLIPMQ_LOG_FORMAT={v:?} is not text or json"))?,
            ),
            None => None,
        },
    };
    let log_format = match log_format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(format!(
                "invalid value '{other}' for --log-format: expected text or json"
            ))
        }
    };
    Ok(Invocation::Start(StartOptions { config, log_format }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(args: &[&str], env: &[(&str, &str)]) -> Result<Invocation, String> {
        let env: Vec<(String, OsString)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        parse(args.iter().map(OsString::from), move |name| {
            env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    fn start(config: Option<&str>, log_format: LogFormat) -> Invocation {
        Invocation::Start(StartOptions {
            config: config.map(PathBuf::from),
            log_format,
        })
    }

    #[test]
    fn no_arguments_start_on_the_defaults() {
        assert_eq!(parse_with(&[], &[]), Ok(start(None, LogFormat::Text)));
        assert_eq!(
            parse_with(&["start"], &[]),
            Ok(start(None, LogFormat::Text))
        );
    }

    #[test]
    fn options_in_every_spelling_with_or_without_the_command() {
        for args in [
            &["--config", "b.toml", "--log-format", "json"][..],
            &["start", "-c", "b.toml", "--log-format=json"],
            &["--config=b.toml", "start", "--log-format", "json"],
        ] {
            assert_eq!(
                parse_with(args, &[]),
                Ok(start(Some("b.toml"), LogFormat::Json)),
                "{args:?}"
            );
        }
    }

    #[test]
    fn the_environment_fills_in_what_the_command_line_leaves_out() {
        let env = [("BLIPMQ_CONFIG", "env.toml"), ("BLIPMQ_LOG_FORMAT", "json")];
        assert_eq!(
            parse_with(&[], &env),
            Ok(start(Some("env.toml"), LogFormat::Json))
        );
        assert_eq!(
            parse_with(&["-c", "cli.toml", "--log-format", "text"], &env),
            Ok(start(Some("cli.toml"), LogFormat::Text))
        );
        assert_eq!(
            parse_with(&[], &[("BLIPMQ_CONFIG", ""), ("BLIPMQ_LOG_FORMAT", "")]),
            Ok(start(None, LogFormat::Text))
        );
    }

    #[test]
    fn healthcheck_takes_an_address_or_the_config() {
        assert_eq!(
            parse_with(&["healthcheck", "--http", "127.0.0.1:9"], &[]),
            Ok(Invocation::Healthcheck(HealthcheckOptions {
                http: Some("127.0.0.1:9".into()),
                config: None
            }))
        );
        assert_eq!(
            parse_with(&["healthcheck", "--http=h:1", "-c", "b.toml"], &[]),
            Ok(Invocation::Healthcheck(HealthcheckOptions {
                http: Some("h:1".into()),
                config: Some("b.toml".into())
            }))
        );
        assert_eq!(
            parse_with(&["healthcheck"], &[("BLIPMQ_CONFIG", "env.toml")]),
            Ok(Invocation::Healthcheck(HealthcheckOptions {
                http: None,
                config: Some("env.toml".into())
            }))
        );
    }

    #[test]
    fn help_and_version_win_wherever_they_are() {
        for args in [
            &["--help"][..],
            &["-h"],
            &["start", "--help"],
            &["help"],
            &["--log-format", "xml", "-h"],
        ] {
            assert_eq!(parse_with(args, &[]), Ok(Invocation::Help), "{args:?}");
        }
        assert_eq!(parse_with(&["-V"], &[]), Ok(Invocation::Version));
        assert_eq!(
            parse_with(&["start", "--version"], &[]),
            Ok(Invocation::Version)
        );
    }

    #[test]
    fn bad_command_lines_say_what_is_wrong() {
        for (args, env, needle) in [
            (&["--log-format", "xml"][..], &[][..], "xml"),
            (&[], &[("BLIPMQ_LOG_FORMAT", "yaml")][..], "yaml"),
            (&["--config"], &[], "--config needs a value"),
            (&["--log-format"], &[], "--log-format needs a value"),
            (&["--port", "1"], &[], "'--port'"),
            (&["stop"], &[], "'stop'"),
            (&["start", "start"], &[], "'start'"),
            (&["--http", "x:1"], &[], "'--http'"),
            (&["healthcheck", "--http"], &[], "--http needs a value"),
            (&["healthcheck", "start"], &[], "'start'"),
        ] {
            let error = parse_with(args, env).unwrap_err();
            assert!(error.contains(needle), "{args:?}: {error}");
        }
    }
}
