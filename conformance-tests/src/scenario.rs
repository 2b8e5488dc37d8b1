//! Scenarios as data: loading `scenarios/*.toml` and normalising the
//! readable payload forms into the contract's base64.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

/// The role an actor plays when a scenario runs across two testees: the
/// producers run in one, the consumers in the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Producer,
    Consumer,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub id: String,
    /// One sentence on what the scenario proves; printed when it fails.
    pub description: String,
    /// Requirement ids of schema/SPEC.md this scenario proves.
    pub covers: Vec<String>,
    /// Capabilities a testee needs for this scenario (else it is skipped).
    #[serde(default)]
    pub needs: Vec<String>,
    /// Actor name -> role.
    pub actors: BTreeMap<String, Role>,
    /// Broker config overrides, `"section.key" = value`.
    #[serde(default)]
    pub broker: BTreeMap<String, toml::Value>,
    /// A whole blipmq.toml for the broker, for what `broker` overrides
    /// cannot say (`[[auth.users]]`); the overrides still apply on top.
    #[serde(default)]
    pub broker_file: Option<String>,
    /// Whether the scenario also runs across SDK pairs (default true). Off
    /// for scenarios about the broker's own queueing under a stalled
    /// consumer: they flood tens of MB per run, and running them for every
    /// producer × consumer pair buys no interoperability coverage.
    #[serde(default = "yes")]
    pub pairs: bool,
    pub steps: Vec<Step>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// An actor of the scenario, or `runner` for runner-side operations.
    pub actor: String,
    pub op: String,
    #[serde(default)]
    pub args: toml::Table,
    /// What the reply must be; absent = any `ok`.
    pub expect: Option<toml::Table>,
    /// Send the request this many times; `{i}` in string args becomes the
    /// iteration number (0-based). Every reply is judged.
    #[serde(default)]
    pub repeat: Option<u32>,
    /// Keep the `ok` result under this name; a later step's string argument
    /// `"@name:/json/pointer"` is replaced by that part of it.
    #[serde(default)]
    pub save: Option<String>,
}

impl Step {
    /// The step's args for iteration `i`, with `{i}` substituted.
    pub fn args_for(&self, i: u32) -> toml::Table {
        fn substitute(value: &mut toml::Value, i: &str) {
            match value {
                toml::Value::String(s) => *s = s.replace("{i}", i),
                toml::Value::Array(items) => items.iter_mut().for_each(|v| substitute(v, i)),
                toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| substitute(v, i)),
                _ => {}
            }
        }
        let mut args = self.args.clone();
        let i = i.to_string();
        args.iter_mut().for_each(|(_, v)| substitute(v, &i));
        args
    }
}

impl Scenario {
    pub fn load_dir(dir: &Path) -> Result<Vec<Scenario>, String> {
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        let mut scenarios = Vec::new();
        for path in paths {
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let scenario: Scenario =
                toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            scenario
                .check()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            scenarios.push(scenario);
        }
        let mut ids: Vec<&str> = scenarios.iter().map(|s| s.id.as_str()).collect();
        ids.sort();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("scenario id {} is used twice", w[0]));
        }
        Ok(scenarios)
    }

    fn check(&self) -> Result<(), String> {
        for (i, step) in self.steps.iter().enumerate() {
            if step.actor != "runner" && !self.actors.contains_key(&step.actor) {
                return Err(format!("step {}: unknown actor {:?}", i + 1, step.actor));
            }
        }
        Ok(())
    }

    /// Whether the scenario has both a producer and a consumer, and so can
    /// run across two testees.
    pub fn pairable(&self) -> bool {
        let roles: Vec<Role> = self.actors.values().copied().collect();
        self.pairs && roles.contains(&Role::Producer) && roles.contains(&Role::Consumer)
    }

    /// `BLIPMQ_*` environment overrides for the broker.
    pub fn broker_env(&self) -> Vec<(String, String)> {
        self.broker
            .iter()
            .map(|(key, value)| {
                let name = format!("BLIPMQ_{}", key.replace('.', "_").to_ascii_uppercase());
                let value = match value {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Array(items) => items
                        .iter()
                        .map(|v| {
                            v.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| v.to_string())
                        })
                        .collect::<Vec<_>>()
                        .join(","),
                    other => other.to_string(),
                };
                (name, value)
            })
            .collect()
    }
}

/// Convert TOML to JSON, turning readable payloads into base64: wherever a
/// key is `payload`, `bytes` or `value` (a header value), the value may be a string (used as UTF-8
/// text) or a table `{ text = "..." }`, `{ hex = "00ff" }`,
/// `{ b64 = "..." }` or `{ pattern_len = N }` (N bytes of a fixed pattern).
pub fn to_json(value: &toml::Value) -> Result<Value, String> {
    Ok(match value {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => Value::from(*f),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => {
            Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?)
        }
        toml::Value::Table(table) => table_to_json(table)?,
    })
}

pub fn table_to_json(table: &toml::Table) -> Result<Value, String> {
    let mut object = serde_json::Map::new();
    for (key, value) in table {
        let converted = if key == "payload" || key == "bytes" || key == "value" {
            Value::String(payload_b64(value)?)
        } else {
            to_json(value)?
        };
        object.insert(key.clone(), converted);
    }
    Ok(Value::Object(object))
}

fn payload_b64(value: &toml::Value) -> Result<String, String> {
    let b64 = &base64::engine::general_purpose::STANDARD;
    let bytes: Vec<u8> = match value {
        toml::Value::String(text) => text.as_bytes().to_vec(),
        toml::Value::Table(t) => {
            if let Some(text) = t.get("text").and_then(|v| v.as_str()) {
                // `pad_to = N` extends the text with '.' to N bytes.
                let mut bytes = text.as_bytes().to_vec();
                if let Some(n) = t.get("pad_to").and_then(|v| v.as_integer()) {
                    bytes.resize((n.max(0) as usize).max(bytes.len()), b'.');
                }
                bytes
            } else if let Some(hex) = t.get("hex").and_then(|v| v.as_str()) {
                decode_hex(hex)?
            } else if let Some(encoded) = t.get("b64").and_then(|v| v.as_str()) {
                return Ok(encoded.to_string());
            } else if let Some(n) = t.get("pattern_len").and_then(|v| v.as_integer()) {
                (0..n).map(|i| (i % 251) as u8).collect()
            } else {
                return Err(format!("unknown payload form {t}"));
            }
        }
        other => {
            return Err(format!(
                "a payload must be a string or a table, not {other}"
            ))
        }
    };
    Ok(b64.encode(bytes))
}

fn decode_hex(hex: &str) -> Result<Vec<u8>, String> {
    let clean: String = hex.chars().filter(|c| !c.is_whitespace()).collect();
    if clean.len() % 2 != 0 {
        return Err(format!("odd-length hex {hex:?}"));
    }
    (0..clean.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&clean[i..i + 2], 16).map_err(|e| format!("hex {hex:?}: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_forms_become_base64() {
        let table: toml::Table =
            toml::from_str("payload = \"hi\"\nnested = { payload = { hex = \"00ff\" } }\nn = 3")
                .unwrap();
        let json = table_to_json(&table).unwrap();
        assert_eq!(json["payload"], "aGk=");
        assert_eq!(json["nested"]["payload"], "AP8=");
        assert_eq!(json["n"], 3);
        let table: toml::Table = toml::from_str("payload = { pattern_len = 3 }").unwrap();
        assert_eq!(table_to_json(&table).unwrap()["payload"], "AAEC");
    }
}
