//! The wire side of the testee contract: requests parsed from one NDJSON
//! line, replies serialized to one, and typed access to a request's `args`.

use base64::Engine;
use serde::Serialize;
use serde_json::{Map, Value};

/// 301 InvalidArgument: the testee's answer to a request it cannot read.
pub const INVALID_ARGUMENT: u16 = 301;

/// One request: `{"id", "actor"?, "op", "args"?}`.
#[derive(Debug)]
pub struct Request {
    pub id: Value,
    pub actor: Option<String>,
    pub op: String,
    pub args: Args,
}

/// One reply: the request's `id` and exactly one of `ok`, `err`, `skipped`.
#[derive(Debug, Serialize)]
pub struct Reply {
    pub id: Value,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Debug, Serialize)]
pub enum Outcome {
    #[serde(rename = "ok")]
    Ok(Value),
    #[serde(rename = "err")]
    Err(Failure),
    #[serde(rename = "skipped")]
    Skipped(String),
}

/// What the SDK (or the testee, for a request it cannot read) reported.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub code: u16,
    pub message: String,
}

impl Failure {
    pub fn new(code: u16, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(INVALID_ARGUMENT, message)
    }

    /// Any error of the client crate, by its wire code and detail.
    pub fn from_sdk<K: Copy>(error: &blipmq::error::Error<K>) -> Failure {
        Failure::new(error.code().0, error.message())
    }
}

/// Parse one line. A line that is not a request still yields the id to
/// answer with when there is one (`null` otherwise).
pub fn parse_request(line: &[u8]) -> Result<Request, (Value, Failure)> {
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| (Value::Null, Failure::invalid(format!("not JSON: {e}"))))?;
    let Value::Object(mut object) = value else {
        return Err((Value::Null, Failure::invalid("a request is a JSON object")));
    };
    let id = object.remove("id").unwrap_or(Value::Null);
    let bad = |message: &str| Err((id.clone(), Failure::invalid(message)));
    if !id.is_string() {
        return bad("`id` must be a string");
    }
    let op = match object.remove("op") {
        Some(Value::String(op)) => op,
        _ => return bad("`op` must be a string"),
    };
    let actor = match object.remove("actor") {
        None | Some(Value::Null) => None,
        Some(Value::String(actor)) => Some(actor),
        Some(_) => return bad("`actor` must be a string"),
    };
    let args = match object.remove("args") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(args)) => args,
        Some(_) => return bad("`args` must be an object"),
    };
    Ok(Request {
        id,
        actor,
        op,
        args: Args(args),
    })
}

/// A request's `args`. Every accessor answers 301 for a missing required
/// argument or one of the wrong type; `null` counts as absent.
#[derive(Debug, Default)]
pub struct Args(Map<String, Value>);

impl Args {
    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    pub fn opt_str(&self, name: &str) -> Result<Option<&str>, Failure> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(Failure::invalid(format!("`{name}` must be a string"))),
        }
    }

    pub fn str(&self, name: &str) -> Result<&str, Failure> {
        self.opt_str(name)?
            .ok_or_else(|| Failure::invalid(format!("missing `{name}`")))
    }

    /// An optional list of strings (`connect`'s `addresses`).
    pub fn opt_str_list(&self, name: &str) -> Result<Option<Vec<String>>, Failure> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        let invalid = || Failure::invalid(format!("`{name}` must be a list of strings"));
        value
            .as_array()
            .ok_or_else(invalid)?
            .iter()
            .map(|item| item.as_str().map(str::to_string).ok_or_else(invalid))
            .collect::<Result<_, _>>()
            .map(Some)
    }

    pub fn opt_u64(&self, name: &str) -> Result<Option<u64>, Failure> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                Failure::invalid(format!("`{name}` must be a non-negative integer"))
            }),
        }
    }

    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, Failure> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| Failure::invalid(format!("`{name}` must be true or false"))),
        }
    }

    pub fn u64(&self, name: &str) -> Result<u64, Failure> {
        self.opt_u64(name)?
            .ok_or_else(|| Failure::invalid(format!("missing `{name}`")))
    }

    /// A required byte string in standard base64 with padding.
    pub fn bytes(&self, name: &str) -> Result<Vec<u8>, Failure> {
        base64::engine::general_purpose::STANDARD
            .decode(self.str(name)?)
            .map_err(|e| Failure::invalid(format!("`{name}` is not base64: {e}")))
    }
}

impl Args {
    /// Optional headers: `[{"key": str, "value": base64}, ...]`, in order.
    pub fn headers(&self) -> Result<Vec<(String, Vec<u8>)>, Failure> {
        let Some(value) = self.get("headers") else {
            return Ok(Vec::new());
        };
        let invalid = || Failure::invalid("`headers` must be a list of {key, value}");
        let list = value.as_array().ok_or_else(invalid)?;
        list.iter()
            .map(|entry| {
                let key = entry
                    .get("key")
                    .and_then(Value::as_str)
                    .ok_or_else(invalid)?;
                let value = entry
                    .get("value")
                    .and_then(Value::as_str)
                    .ok_or_else(invalid)?;
                let value = base64::engine::general_purpose::STANDARD
                    .decode(value)
                    .map_err(|e| Failure::invalid(format!("header value is not base64: {e}")))?;
                Ok((key.to_string(), value))
            })
            .collect()
    }
}

pub fn encode_bytes(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(reply: &Reply) -> Value {
        serde_json::to_value(reply).unwrap()
    }

    #[test]
    fn replies_have_the_three_shapes() {
        let ok = Reply {
            id: json!("1"),
            outcome: Outcome::Ok(json!({})),
        };
        assert_eq!(line(&ok), json!({"id": "1", "ok": {}}));
        let err = Reply {
            id: json!("2"),
            outcome: Outcome::Err(Failure::new(603, "closed")),
        };
        assert_eq!(
            line(&err),
            json!({"id": "2", "err": {"code": 603, "message": "closed"}})
        );
        let skipped = Reply {
            id: json!("3"),
            outcome: Outcome::Skipped("no".into()),
        };
        assert_eq!(line(&skipped), json!({"id": "3", "skipped": "no"}));
    }

    #[test]
    fn malformed_requests_keep_their_id_when_it_can_be_read() {
        let (id, failure) = parse_request(b"{nope").unwrap_err();
        assert_eq!((id, failure.code), (Value::Null, INVALID_ARGUMENT));
        let (id, failure) = parse_request(br#"{"id": "7", "args": {}}"#).unwrap_err();
        assert_eq!((id, failure.code), (json!("7"), INVALID_ARGUMENT));
        let (id, _) = parse_request(br#"{"id": "8", "op": "x", "args": 3}"#).unwrap_err();
        assert_eq!(id, json!("8"));
        assert!(parse_request(b"[1]").is_err());
        assert!(parse_request(b"\xff\xfe").is_err());
    }

    #[test]
    fn args_are_typed() {
        let request = parse_request(
            br#"{"id": "1", "actor": "a", "op": "publish",
                 "args": {"topic": "t", "payload": "aGk=", "qos": 1, "ttl_ms": null, "bad": "%%"}}"#,
        )
        .unwrap();
        let args = &request.args;
        assert_eq!(args.str("topic").unwrap(), "t");
        assert_eq!(args.bytes("payload").unwrap(), b"hi");
        assert_eq!(args.opt_u64("qos").unwrap(), Some(1));
        assert_eq!(args.opt_u64("ttl_ms").unwrap(), None);
        assert_eq!(args.u64("topic").unwrap_err().code, INVALID_ARGUMENT);
        assert_eq!(args.bytes("bad").unwrap_err().code, INVALID_ARGUMENT);
        assert_eq!(args.str("missing").unwrap_err().code, INVALID_ARGUMENT);
    }
}
