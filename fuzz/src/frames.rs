//! The `connection_frames` input: a sequence of operations, each one frame
//! that the harness encodes with `blipmq_protocol`'s encoder, or raw bytes.
//!
//! Fed raw bytes, the broker would mostly see FlatBuffers that fail to
//! verify, and the fuzzer would rarely get past the decoder into the
//! connection's state machine (subscribe, publish, ack, unsubscribe in odd
//! orders). Ops always make well-formed frames with fuzzed contents; the two
//! raw ops keep malformed bodies and broken framing in play.
//!
//! ```text
//! op      := tag u8, then by tag % 10:
//!   0 Hello        version varint, client_name opt_str, api_key opt_str
//!   1 Publish      publish_id varint, topic str, payload bytes, ttl_ms varint,
//!                  qos u8, count u8 (% 9), count × (key str, value bytes)
//!   2 Subscribe    request_id varint, pattern str, qos u8,
//!                  durable_name opt_str, queue_group opt_str
//!   3 Unsubscribe  request_id varint, subscription_id varint, keep_durable u8 (& 1)
//!   4 Ack          subscription_id varint, delivery_id varint
//!   5 Ping         nonce varint
//!   6 Pong         nonce varint
//!   7 ToClient     kind u8 (% 6), id varint: a frame only a broker sends
//!   8 RawFrame     bytes: a length prefix, then these bytes as the body
//!   9 Raw          bytes, verbatim (the framing may break here)
//! str, bytes := len varint (at most MAX_LEN), then len bytes (UTF-8, lossily)
//! opt_str    := present u8 (& 1), then str when present
//! varint     := LEB128, at most 10 bytes
//! ```
//!
//! A field the input ends inside reads as zero or empty.

use blipmq_protocol::{
    Ack, Confirm, Delivery, Encoder, ErrorCode, ErrorFrame, Frame, Header, Hello, Publish, Route,
    Subscribe, Subscribed, Unsubscribe, Unsubscribed, Welcome,
};
use bytes::{BufMut, BytesMut};

/// Longest string or byte field: past the broker's limits in `broker.rs`,
/// not so long that inputs get slow.
pub const MAX_LEN: usize = 8192;

const OPS: u8 = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Hello {
        version: u16,
        client_name: Option<String>,
        api_key: Option<String>,
    },
    Publish {
        publish_id: u64,
        topic: String,
        payload: Vec<u8>,
        ttl_ms: u32,
        qos: u8,
        headers: Vec<(String, Vec<u8>)>,
    },
    Subscribe {
        request_id: u64,
        pattern: String,
        qos: u8,
        durable_name: Option<String>,
        queue_group: Option<String>,
    },
    Unsubscribe {
        request_id: u64,
        subscription_id: u64,
        keep_durable: bool,
    },
    Ack {
        subscription_id: u64,
        delivery_id: u64,
    },
    Ping(u64),
    Pong(u64),
    ToClient {
        kind: u8,
        id: u64,
    },
    RawFrame(Vec<u8>),
    Raw(Vec<u8>),
}

/// Reads fields from the front of the input; past its end, zeros.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn byte(&mut self) -> u8 {
        let (&first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        first
    }

    fn varint(&mut self) -> u64 {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte();
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        value
    }

    fn bytes(&mut self) -> Vec<u8> {
        let len = (self.varint().min(MAX_LEN as u64) as usize).min(self.0.len());
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        taken.to_vec()
    }

    fn string(&mut self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    fn opt_string(&mut self) -> Option<String> {
        (self.byte() & 1 == 1).then(|| self.string())
    }

    fn op(&mut self) -> Op {
        match self.byte() % OPS {
            0 => Op::Hello {
                version: self.varint() as u16,
                client_name: self.opt_string(),
                api_key: self.opt_string(),
            },
            1 => Op::Publish {
                publish_id: self.varint(),
                topic: self.string(),
                payload: self.bytes(),
                ttl_ms: self.varint() as u32,
                qos: self.byte(),
                headers: (0..self.byte() % 9)
                    .map(|_| (self.string(), self.bytes()))
                    .collect(),
            },
            2 => Op::Subscribe {
                request_id: self.varint(),
                pattern: self.string(),
                qos: self.byte(),
                durable_name: self.opt_string(),
                queue_group: self.opt_string(),
            },
            3 => Op::Unsubscribe {
                request_id: self.varint(),
                subscription_id: self.varint(),
                keep_durable: self.byte() & 1 == 1,
            },
            4 => Op::Ack {
                subscription_id: self.varint(),
                delivery_id: self.varint(),
            },
            5 => Op::Ping(self.varint()),
            6 => Op::Pong(self.varint()),
            7 => Op::ToClient {
                kind: self.byte() % 6,
                id: self.varint(),
            },
            8 => Op::RawFrame(self.bytes()),
            _ => Op::Raw(self.bytes()),
        }
    }
}

pub fn decode(input: &[u8]) -> Vec<Op> {
    let mut reader = Reader(input);
    let mut ops = Vec::new();
    while !reader.0.is_empty() {
        ops.push(reader.op());
    }
    ops
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    assert!(bytes.len() <= MAX_LEN, "a field of {} bytes", bytes.len());
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_opt(out: &mut Vec<u8>, value: &Option<String>) {
    out.push(u8::from(value.is_some()));
    if let Some(s) = value {
        put_bytes(out, s.as_bytes());
    }
}

/// The input that [`decode`]s to `ops`.
pub fn encode(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        match op {
            Op::Hello {
                version,
                client_name,
                api_key,
            } => {
                out.push(0);
                put_varint(&mut out, u64::from(*version));
                put_opt(&mut out, client_name);
                put_opt(&mut out, api_key);
            }
            Op::Publish {
                publish_id,
                topic,
                payload,
                ttl_ms,
                qos,
                headers,
            } => {
                assert!(headers.len() < 9, "at most 8 headers");
                out.push(1);
                put_varint(&mut out, *publish_id);
                put_bytes(&mut out, topic.as_bytes());
                put_bytes(&mut out, payload);
                put_varint(&mut out, u64::from(*ttl_ms));
                out.push(*qos);
                out.push(headers.len() as u8);
                for (key, value) in headers {
                    put_bytes(&mut out, key.as_bytes());
                    put_bytes(&mut out, value);
                }
            }
            Op::Subscribe {
                request_id,
                pattern,
                qos,
                durable_name,
                queue_group,
            } => {
                out.push(2);
                put_varint(&mut out, *request_id);
                put_bytes(&mut out, pattern.as_bytes());
                out.push(*qos);
                put_opt(&mut out, durable_name);
                put_opt(&mut out, queue_group);
            }
            Op::Unsubscribe {
                request_id,
                subscription_id,
                keep_durable,
            } => {
                out.push(3);
                put_varint(&mut out, *request_id);
                put_varint(&mut out, *subscription_id);
                out.push(u8::from(*keep_durable));
            }
            Op::Ack {
                subscription_id,
                delivery_id,
            } => {
                out.push(4);
                put_varint(&mut out, *subscription_id);
                put_varint(&mut out, *delivery_id);
            }
            Op::Ping(nonce) => {
                out.push(5);
                put_varint(&mut out, *nonce);
            }
            Op::Pong(nonce) => {
                out.push(6);
                put_varint(&mut out, *nonce);
            }
            Op::ToClient { kind, id } => {
                out.push(7);
                out.push(*kind);
                put_varint(&mut out, *id);
            }
            Op::RawFrame(body) => {
                out.push(8);
                put_bytes(&mut out, body);
            }
            Op::Raw(bytes) => {
                out.push(9);
                put_bytes(&mut out, bytes);
            }
        }
    }
    out
}

/// The bytes a client sending `ops` puts on the wire.
pub fn wire(ops: &[Op]) -> Vec<u8> {
    let mut encoder = Encoder::new();
    let mut out = BytesMut::new();
    for op in ops {
        match op {
            Op::Hello {
                version,
                client_name,
                api_key,
            } => encoder.encode(
                &Frame::Hello(Hello {
                    protocol_version: *version,
                    client_name: client_name.as_deref(),
                    api_key: api_key.as_deref(),
                    drop_notices: false,
                }),
                &mut out,
            ),
            Op::Publish {
                publish_id,
                topic,
                payload,
                ttl_ms,
                qos,
                headers,
            } => encoder.encode(
                &Frame::Publish(Publish {
                    publish_id: *publish_id,
                    topic,
                    payload,
                    ttl_ms: *ttl_ms,
                    qos: *qos,
                    headers: headers
                        .iter()
                        .map(|(key, value)| Header { key, value })
                        .collect(),
                }),
                &mut out,
            ),
            Op::Subscribe {
                request_id,
                pattern,
                qos,
                durable_name,
                queue_group,
            } => encoder.encode(
                &Frame::Subscribe(Subscribe {
                    request_id: *request_id,
                    pattern,
                    qos: *qos,
                    durable_name: durable_name.as_deref(),
                    queue_group: queue_group.as_deref(),
                    ..Default::default()
                }),
                &mut out,
            ),
            Op::Unsubscribe {
                request_id,
                subscription_id,
                keep_durable,
            } => encoder.encode(
                &Frame::Unsubscribe(Unsubscribe {
                    request_id: *request_id,
                    subscription_id: *subscription_id,
                    keep_durable: *keep_durable,
                }),
                &mut out,
            ),
            Op::Ack {
                subscription_id,
                delivery_id,
            } => encoder.encode(
                &Frame::Ack(Ack {
                    subscription_id: *subscription_id,
                    delivery_id: *delivery_id,
                    ..Default::default()
                }),
                &mut out,
            ),
            Op::Ping(nonce) => encoder.encode(&Frame::Ping { nonce: *nonce }, &mut out),
            Op::Pong(nonce) => encoder.encode(&Frame::Pong { nonce: *nonce }, &mut out),
            Op::ToClient { kind, id } => encoder.encode(&to_client(*kind, *id), &mut out),
            Op::RawFrame(body) => {
                out.put_u32_le(body.len() as u32);
                out.extend_from_slice(body);
            }
            Op::Raw(bytes) => out.extend_from_slice(bytes),
        }
    }
    out.to_vec()
}

/// A frame of a type that only a broker sends.
fn to_client(kind: u8, id: u64) -> Frame<'static> {
    match kind {
        0 => Frame::Welcome(Welcome {
            connection_id: id,
            ..Welcome::default()
        }),
        1 => Frame::Confirm(Confirm {
            publish_id: id,
            message_id: id,
        }),
        2 => Frame::Subscribed(Subscribed {
            request_id: id,
            subscription_id: id,
        }),
        3 => Frame::Unsubscribed(Unsubscribed {
            request_id: id,
            subscription_id: id,
        }),
        4 => Frame::Delivery(Delivery {
            route: Route {
                subscription_id: id,
                delivery_id: id,
                delivery_count: 1,
            },
            topic: "t",
            ..Delivery::default()
        }),
        _ => Frame::Error(ErrorFrame {
            code: ErrorCode::MalformedFrame,
            message: "from a client",
            request_id: id,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_decode_is_identity() {
        let ops = vec![
            Op::Hello {
                version: 1,
                client_name: Some("c".into()),
                api_key: None,
            },
            Op::Publish {
                publish_id: u64::MAX,
                topic: "a.b".into(),
                payload: vec![0; 300],
                ttl_ms: 7,
                qos: 1,
                headers: vec![("k".into(), b"v".to_vec())],
            },
            Op::Subscribe {
                request_id: 2,
                pattern: "a.>".into(),
                qos: 1,
                durable_name: Some("d".into()),
                queue_group: Some("g".into()),
            },
            Op::Unsubscribe {
                request_id: 3,
                subscription_id: 1,
                keep_durable: true,
            },
            Op::Ack {
                subscription_id: 1,
                delivery_id: 1 << 40,
            },
            Op::Ping(9),
            Op::Pong(10),
            Op::ToClient { kind: 4, id: 5 },
            Op::RawFrame(vec![1, 2, 3]),
            Op::Raw(vec![0xff; 5]),
        ];
        assert_eq!(decode(&encode(&ops)), ops);
    }

    #[test]
    fn every_input_decodes() {
        assert_eq!(decode(&[]), vec![]);
        assert_eq!(decode(&[5]), vec![Op::Ping(0)]);
        // A varint of eleven continuation bytes stops after ten.
        assert_eq!(
            decode(&[5, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).len(),
            1
        );
    }
}
