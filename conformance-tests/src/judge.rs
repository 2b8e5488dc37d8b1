//! Judging a testee's reply against a step's `expect`.
//!
//! `expect = { err = { code = 300 } }` wants an error with that code.
//! Anything else wants `ok`: `expect = { ok = {...} }`, or the keys of the
//! ok result directly. Objects match as subsets (extra fields are fine),
//! arrays element by element with equal length, scalars exactly.
//! `message_count = N` checks only the length of `messages`; `first` and
//! `last` match the first and last message only. `accounted_for = N` wants
//! every one of N messages received or reported discarded (QUEUE-6): the
//! messages plus the reply's `dropped` make N, the messages' own
//! `dropped_before` are part of `dropped`, and the subscription's running
//! `dropped_total` counts them all.
//!
//! Every error reply that names its class is also checked against the error
//! table: an SDK must raise, for each wire code, the class every SDK names
//! for it (schema/errors.toml), whatever the step expected.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use crate::scenario::table_to_json;
use crate::testee::Reply;

/// The class stem of every wire code, from schema/error-classes.json
/// (written beside the SDKs' error classes by scripts/lib/gen_errors.py).
#[derive(Debug, Default)]
pub struct ErrorTable {
    stems: HashMap<i64, String>,
}

impl ErrorTable {
    pub fn load(path: &Path) -> Result<ErrorTable, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let table: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let stems = table["codes"]
            .as_array()
            .ok_or_else(|| format!("{}: no `codes` list", path.display()))?
            .iter()
            .filter_map(|row| Some((row["code"].as_i64()?, row["class"].as_str()?.to_string())))
            .collect::<HashMap<_, _>>();
        if !stems.contains_key(&0) {
            return Err(format!("{}: no class for code 0 (Unknown)", path.display()));
        }
        Ok(ErrorTable { stems })
    }

    /// The class a testee naming its classes by `pattern` (`{}` standing for
    /// the stem) must raise for `code`; a code the table lacks is code 0's.
    pub fn class_for(&self, pattern: &str, code: i64) -> String {
        let stem = self.stems.get(&code).unwrap_or(&self.stems[&0]);
        pattern.replace("{}", stem)
    }
}

/// How one testee's errors are named: the table and the testee's pattern.
pub type ErrorNaming<'a> = Option<(&'a ErrorTable, &'a str)>;

pub fn judge(
    expect: Option<&toml::Table>,
    reply: &Reply,
    naming: ErrorNaming<'_>,
) -> Result<(), String> {
    if let (
        Reply::Err {
            code,
            class: Some(class),
            message,
        },
        Some((table, pattern)),
    ) = (reply, naming)
    {
        let want = table.class_for(pattern, *code);
        if *class != want {
            return Err(format!(
                "error {code} ({message}) was raised as {class}; every SDK names it {want}"
            ));
        }
    }
    let Some(expect) = expect else {
        return match reply {
            Reply::Ok(_) => Ok(()),
            other => Err(format!("expected ok, got {}", describe(other))),
        };
    };
    let expect = table_to_json(expect)?;
    if let Some(want) = expect.get("err") {
        return match reply {
            Reply::Err { code, message, .. } => {
                if let Some(want_code) = want.get("code") {
                    if want_code.as_i64() != Some(*code) {
                        return Err(format!(
                            "expected error code {want_code}, got {code} ({message})"
                        ));
                    }
                }
                if let Some(fragment) = want.get("message_contains").and_then(Value::as_str) {
                    if !message.contains(fragment) {
                        return Err(format!(
                            "expected an error message containing {fragment:?}, got {message:?}"
                        ));
                    }
                }
                Ok(())
            }
            other => Err(format!("expected an error {want}, got {}", describe(other))),
        };
    }
    let Reply::Ok(actual) = reply else {
        return Err(format!("expected ok {expect}, got {}", describe(reply)));
    };
    let want = expect.get("ok").cloned().unwrap_or(expect);
    let Value::Object(want) = want else {
        return Err("expect.ok must be a table".into());
    };
    for (key, want_value) in &want {
        if key == "first" || key == "last" {
            let messages = actual["messages"].as_array().cloned().unwrap_or_default();
            let message = if key == "first" {
                messages.first()
            } else {
                messages.last()
            };
            let message = message.ok_or_else(|| format!("{key}: no messages"))?;
            subset(want_value, message).map_err(|e| format!("{key} message: {e}"))?;
            continue;
        }
        if key == "accounted_for" {
            accounted_for(want_value, actual)?;
            continue;
        }
        if key == "message_count" {
            let got = actual["messages"].as_array().map_or(0, Vec::len) as i64;
            if want_value.as_i64() != Some(got) {
                return Err(format!(
                    "expected {want_value} messages, got {got}: {}",
                    actual["messages"]
                ));
            }
            continue;
        }
        subset(want_value, &actual[key.as_str()]).map_err(|e| format!("{key}: {e}"))?;
    }
    Ok(())
}

/// QUEUE-6 from the application's side: what a receive got and what the
/// SDK told it was discarded add up to `want`.
fn accounted_for(want: &Value, actual: &Value) -> Result<(), String> {
    let want = want
        .as_u64()
        .ok_or_else(|| format!("accounted_for must be a count, not {want}"))?;
    let messages = actual["messages"].as_array().cloned().unwrap_or_default();
    let count = |value: &Value, what: &str| {
        value
            .as_u64()
            .ok_or_else(|| format!("the reply has no {what} count: {actual}"))
    };
    let dropped = count(&actual["dropped"], "dropped")?;
    let total = count(&actual["dropped_total"], "dropped_total")?;
    let mut in_line = 0;
    for message in &messages {
        in_line += count(&message["dropped_before"], "dropped_before")?;
    }
    if messages.len() as u64 + dropped != want {
        return Err(format!(
            "{} messages received and {dropped} reported dropped: {} unaccounted for of {want}",
            messages.len(),
            want as i64 - messages.len() as i64 - dropped as i64
        ));
    }
    if in_line > dropped {
        return Err(format!(
            "messages carried {in_line} drops but only {dropped} were reported"
        ));
    }
    if total != dropped {
        return Err(format!(
            "the subscription counts {total} dropped, the application was told of {dropped}"
        ));
    }
    Ok(())
}

fn subset(want: &Value, got: &Value) -> Result<(), String> {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (key, wv) in w {
                let gv = g
                    .get(key)
                    .ok_or_else(|| format!("missing field {key:?} in {got}"))?;
                subset(wv, gv).map_err(|e| format!("{key}: {e}"))?;
            }
            Ok(())
        }
        (Value::Array(w), Value::Array(g)) => {
            if w.len() != g.len() {
                return Err(format!(
                    "expected {} items, got {}: {got}",
                    w.len(),
                    g.len()
                ));
            }
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                subset(wv, gv).map_err(|e| format!("[{i}]: {e}"))?;
            }
            Ok(())
        }
        (w, g) if w == g => Ok(()),
        // 64-bit integers travel as strings; let scenarios write numbers.
        (Value::Number(n), Value::String(s)) if n.to_string() == *s => Ok(()),
        (w, g) => Err(format!("expected {w}, got {g}")),
    }
}

fn describe(reply: &Reply) -> String {
    match reply {
        Reply::Ok(v) => format!("ok {v}"),
        Reply::Err { code, message, .. } => format!("error {code} ({message})"),
        Reply::Skipped(why) => format!("skipped ({why})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: &str) -> toml::Table {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn ok_and_err_expectations() {
        assert!(judge(None, &Reply::Ok(json!({})), None).is_ok());
        assert!(judge(
            None,
            &Reply::Err {
                code: 1,
                message: "x".into(),
                class: None,
            },
            None,
        )
        .is_err());
        let want = t("err = { code = 300 }");
        assert!(judge(
            Some(&want),
            &Reply::Err {
                code: 300,
                message: "bad".into(),
                class: None,
            },
            None,
        )
        .is_ok());
        assert!(judge(
            Some(&want),
            &Reply::Err {
                code: 301,
                message: "bad".into(),
                class: None,
            },
            None,
        )
        .is_err());
        assert!(judge(Some(&want), &Reply::Ok(json!({})), None).is_err());
    }

    #[test]
    fn messages_match_as_subsets_with_base64_payloads() {
        let want = t("messages = [{ topic = \"a\", payload = \"hi\", delivery_count = 1 }]");
        let got = json!({"messages": [{"topic": "a", "payload": "aGk=", "id": "7", "delivery_count": 1}]});
        assert!(judge(Some(&want), &Reply::Ok(got), None).is_ok());
        let wrong = json!({"messages": [{"topic": "a", "payload": "aG8=", "id": "7", "delivery_count": 1}]});
        assert!(judge(Some(&want), &Reply::Ok(wrong), None).is_err());
        let count = t("message_count = 0");
        assert!(judge(Some(&count), &Reply::Ok(json!({"messages": []})), None).is_ok());
        assert!(judge(Some(&count), &Reply::Ok(json!({"messages": [{}]})), None).is_err());
    }

    #[test]
    fn every_message_must_be_received_or_reported_dropped() {
        let want = t("accounted_for = 5");
        let reply = |received: usize, carried: u64, dropped: u64, total: u64| {
            let mut messages = vec![json!({"dropped_before": 0}); received];
            if let Some(first) = messages.first_mut() {
                first["dropped_before"] = json!(carried);
            }
            Reply::Ok(json!({"messages": messages, "dropped": dropped, "dropped_total": total}))
        };
        assert!(judge(Some(&want), &reply(2, 1, 3, 3), None).is_ok());
        assert!(judge(Some(&want), &reply(5, 0, 0, 0), None).is_ok());
        let lost = judge(Some(&want), &reply(2, 0, 2, 2), None).unwrap_err();
        assert!(lost.contains("1 unaccounted for"), "{lost}");
        assert!(judge(Some(&want), &reply(2, 4, 3, 3), None).is_err());
        assert!(judge(Some(&want), &reply(2, 0, 3, 4), None).is_err());
        // An SDK that does not report drops fails.
        let silent = Reply::Ok(json!({"messages": [{}, {}]}));
        assert!(judge(Some(&want), &silent, None).is_err());
    }

    #[test]
    fn an_error_must_carry_the_class_its_code_has_in_every_sdk() {
        let table = ErrorTable {
            stems: [(0, "Unknown"), (300, "InvalidTopic"), (600, "Connect")]
                .map(|(code, stem)| (code, stem.to_string()))
                .into(),
        };
        let naming = Some((&table, "{}Error"));
        let err = |code, class: &str| Reply::Err {
            code,
            message: "m".into(),
            class: Some(class.into()),
        };
        let want = t("err = { code = 300 }");
        assert!(judge(Some(&want), &err(300, "InvalidTopicError"), naming).is_ok());
        let wrong = judge(Some(&want), &err(300, "InvalidArgumentError"), naming).unwrap_err();
        assert!(
            wrong.contains("every SDK names it InvalidTopicError"),
            "{wrong}"
        );
        // Checked even where the step expects no particular error...
        assert!(judge(None, &err(600, "ConnectionError"), naming).is_err());
        // ...and a code the table lacks is Unknown's.
        assert!(judge(None, &err(406, "UnknownError"), naming)
            .unwrap_err()
            .contains("expected ok"));
        assert!(judge(None, &err(406, "QueueFullError"), naming)
            .unwrap_err()
            .contains("UnknownError"));
        // A testee without a pattern, or an error without a class, is not checked.
        assert!(judge(Some(&want), &err(300, "Whatever"), None).is_ok());
        let classless = Reply::Err {
            code: 300,
            message: "m".into(),
            class: None,
        };
        assert!(judge(Some(&want), &classless, naming).is_ok());
    }
}
