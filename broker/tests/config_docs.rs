//! docs/configuration.md against the config struct: every key the broker
//! accepts is in the reference, every key in the reference is accepted, and
//! each documented default and environment variable is the one the broker
//! uses.
//!
//! The keys come from the struct itself, not from a second list: every
//! config table denies unknown fields, and serde's refusal of an unknown key
//! lists the fields that table has. So the test asks the broker's own
//! `Config` deserializer for the fields of each table, and goes down every
//! field that is itself a table (or a list of tables, `[[auth.users]]`).

use std::collections::BTreeSet;

use blipmq_broker::Config;

const REFERENCE: &str = include_str!("../../docs/configuration.md");
const PROBE: &str = "__not_a_key__";

/// One step of a key's path: a table, or a list of tables (`[[...]]`).
#[derive(Clone, Copy)]
enum Step<'a> {
    Table(&'a str),
    ListOfTables(&'a str),
}

/// The fields of the table at `path`, or `None` when nothing there is a
/// table (a value such as a number, an address or a list of strings).
fn fields_at(path: &[Step]) -> Option<Vec<String>> {
    let mut value = toml::Value::Table(toml::Table::from_iter([(
        PROBE.to_string(),
        toml::Value::Integer(0),
    )]));
    for step in path.iter().rev() {
        let (name, wrapped) = match *step {
            Step::Table(name) => (name, value),
            Step::ListOfTables(name) => (name, toml::Value::Array(vec![value])),
        };
        value = toml::Value::Table(toml::Table::from_iter([(name.to_string(), wrapped)]));
    }
    let error = value
        .try_into::<Config>()
        .expect_err("an unknown key is refused");
    // "unknown field `__not_a_key__`, expected one of `a`, `b`" (or
    // "expected `a` or `b`", "expected `a`", "there are no fields").
    let message = error.message();
    let refused = format!("unknown field `{PROBE}`");
    let expected = message.split_once(refused.as_str())?.1;
    Some(
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

/// Every key the broker accepts, dotted (`server.bind_addr`,
/// `auth.users.publish.allow`), with whether it sits inside a list of tables.
fn accepted_keys() -> BTreeSet<(String, bool)> {
    fn walk(path: &mut Vec<String>, lists: &mut Vec<bool>, keys: &mut BTreeSet<(String, bool)>) {
        let steps = |path: &[String], lists: &[bool]| -> Vec<(String, bool)> {
            path.iter().cloned().zip(lists.iter().copied()).collect()
        };
        let here = steps(path, lists);
        let as_steps: Vec<Step> = here
            .iter()
            .map(|(name, list)| {
                if *list {
                    Step::ListOfTables(name)
                } else {
                    Step::Table(name)
                }
            })
            .collect();
        let fields = fields_at(&as_steps).expect("a table");
        for field in fields {
            let mut table = as_steps.clone();
            table.push(Step::Table(&field));
            let mut list = as_steps.clone();
            list.push(Step::ListOfTables(&field));
            let kind = if fields_at(&table).is_some() {
                Some(false)
            } else if fields_at(&list).is_some() {
                Some(true)
            } else {
                None
            };
            match kind {
                Some(is_list) => {
                    path.push(field);
                    lists.push(is_list);
                    walk(path, lists, keys);
                    path.pop();
                    lists.pop();
                }
                None => {
                    let mut dotted = path.clone();
                    dotted.push(field);
                    keys.insert((dotted.join("."), lists.contains(&true)));
                }
            }
        }
    }
    let mut keys = BTreeSet::new();
    walk(&mut Vec::new(), &mut Vec::new(), &mut keys);
    keys
}

/// A row of the reference's tables.
struct Row {
    /// `server.bind_addr`
    key: String,
    /// Under a `[[...]]` heading: one entry of a list of tables.
    in_list: bool,
    section: String,
    name: String,
    default: String,
    env: String,
}

/// The reference's rows: under a heading "### `[section]`" (or
/// "### `[[section]]`"), each table row whose first cell is a `key`.
fn documented_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    let mut section: Option<(String, bool)> = None;
    for line in REFERENCE.lines() {
        if let Some(heading) = line.strip_prefix("### `[") {
            let heading = heading.trim_end_matches('`');
            let in_list = heading.starts_with('[');
            let name = heading.trim_matches(|c| c == '[' || c == ']').to_string();
            section = Some((name, in_list));
            continue;
        }
        if line.starts_with("## ") {
            section = None;
            continue;
        }
        let (Some((name, in_list)), Some(row)) = (&section, line.strip_prefix("| `")) else {
            continue;
        };
        let cells: Vec<&str> = row.split(" | ").collect();
        assert!(
            cells.len() >= 5,
            "a reference row needs key, type, default, env, meaning: {line}"
        );
        let key = cells[0].trim_end_matches('`').to_string();
        rows.push(Row {
            key: format!("{name}.{key}"),
            in_list: *in_list,
            section: name.clone(),
            name: key,
            default: cells[2].trim().to_string(),
            env: cells[3].trim().to_string(),
        });
    }
    rows
}

#[test]
fn the_reference_documents_exactly_the_keys_the_broker_accepts() {
    let accepted = accepted_keys();
    // A sanity check of the probing itself: a few keys it must find.
    for known in [
        "server.bind_addr",
        "wal.fsync_policy",
        "auth.users.publish.allow",
    ] {
        assert!(
            accepted.iter().any(|(key, _)| key == known),
            "probing found no {known}: {accepted:?}"
        );
    }
    let documented: BTreeSet<(String, bool)> = documented_rows()
        .into_iter()
        .map(|row| (row.key, row.in_list))
        .collect();
    let undocumented: Vec<_> = accepted.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&accepted).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "docs/configuration.md is out of step with broker/src/config.rs:\n\
         accepted but not documented: {undocumented:?}\n\
         documented but not accepted: {unknown:?}"
    );
}

#[test]
fn each_documented_default_and_environment_variable_is_the_brokers() {
    let defaults = Config::default();
    let mut checked = 0;
    for row in documented_rows().into_iter().filter(|row| !row.in_list) {
        let expected_env = format!(
            "`BLIPMQ_{}_{}`",
            row.section.to_uppercase(),
            row.name.to_uppercase()
        );
        assert_eq!(
            row.env, expected_env,
            "{}: the environment variable",
            row.key
        );
        if row.default.starts_with("unset") {
            continue;
        }
        let literal = row
            .default
            .strip_prefix('`')
            .and_then(|d| d.strip_suffix('`'))
            .unwrap_or_else(|| panic!("{}: a default is `a TOML value` or unset…", row.key));
        // In the file.
        let text = format!("[{}]\n{} = {literal}\n", row.section, row.name);
        let from_file = Config::from_toml(&text)
            .unwrap_or_else(|e| panic!("{}: the documented default {literal}: {e}", row.key));
        assert!(
            from_file == defaults,
            "{}: {literal} is not the default",
            row.key
        );
        // From the environment, written as a shell would (no quotes; a
        // list comma-separated).
        let raw = literal
            .trim_matches(|c| c == '"' || c == '[' || c == ']')
            .replace("\", \"", ",");
        let env = [(expected_env.trim_matches('`').to_string(), raw.clone())];
        let from_env = Config::load(None, env)
            .unwrap_or_else(|e| panic!("{}: {expected_env}={raw}: {e}", row.key));
        assert!(
            from_env == defaults,
            "{}: {expected_env}={raw} is not the default",
            row.key
        );
        checked += 1;
    }
    assert!(checked > 40, "only {checked} defaults checked");
}
