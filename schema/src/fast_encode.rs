//! Fixed-layout encoders for the hot frames without headers: `Publish`
//! (every client publish) and `Delivery` (every message the broker fans
//! out). They write the same FlatBuffers tables the generic builder would,
//! in one pass into the output buffer, with no vtable search or
//! back-to-front building. Frames with headers use the builder.
//!
//! Layout of a body (offsets from the body start; scalars aligned to their
//! size, as FlatBuffers requires):
//!
//! ```text
//!  0  u32  root offset = 12
//!  4  Envelope vtable: len 8, table len 12, body_type @8, body @4
//! 12  Envelope table: soffset 8 | 16 body offset | 20 body_type, pad
//! 24  body vtable (7 u16), pad to 40
//! 40  body table (fields below), then the topic string and the payload
//! ```

use bytes::{BufMut, BytesMut};

use crate::fb;
use crate::frame::{Delivery, Publish};
use crate::LENGTH_PREFIX_LEN;

const ENVELOPE_TABLE: usize = 12;
const BODY_VTABLE: usize = 24;
const BODY_TABLE: usize = 40;

/// Publish table fields, from the table start.
const P_TTL: u16 = 4;
const P_PUBLISH_ID: u16 = 8;
const P_TOPIC: u16 = 16;
const P_PAYLOAD: u16 = 20;
const P_QOS: u16 = 24;
const P_TABLE_LEN: usize = 28;

/// Delivery table fields, from the table start.
const D_TOPIC: u16 = 4;
const D_ROUTE: u16 = 8;
const D_MESSAGE_ID: u16 = 32;
const D_TIMESTAMP: u16 = 40;
const D_PAYLOAD: u16 = 48;
const D_TABLE_LEN: usize = 52;

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

/// The fixed part of a frame (length prefix, envelope, body vtable and
/// body table), assembled on the stack and appended with one copy: a
/// `BytesMut::put_*` per field checked the capacity every time.
struct Fixed<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Fixed<N> {
    fn new() -> Self {
        Fixed {
            bytes: [0; N],
            len: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) {
        self.bytes[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn u8(&mut self, v: u8) {
        self.put(&[v]);
    }

    fn u16(&mut self, v: u16) {
        self.put(&v.to_le_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
    }

    fn zeros(&mut self, n: usize) {
        // The array starts zeroed.
        self.len += n;
    }

    /// Length prefix, envelope and the body's vtable (`slots` field offsets
    /// in slot order), up to the body table's first field.
    fn head(&mut self, frame_len: usize, kind: fb::Body, table_len: usize, slots: [u16; 5]) {
        self.u32(frame_len as u32);
        self.u32(ENVELOPE_TABLE as u32);
        // Envelope vtable: body (slot 6) at +4, body_type (slot 4) at +8.
        for v in [8u16, 12, 8, 4] {
            self.u16(v);
        }
        self.put(&((ENVELOPE_TABLE - 4) as i32).to_le_bytes());
        self.u32((BODY_TABLE - (ENVELOPE_TABLE + 4)) as u32);
        self.u8(kind.0);
        self.zeros(3);
        self.u16(14);
        self.u16(table_len as u16);
        for slot in slots {
            self.u16(slot);
        }
        self.zeros(BODY_TABLE - BODY_VTABLE - 14);
        self.put(&((BODY_TABLE - BODY_VTABLE) as i32).to_le_bytes());
    }

    fn written(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The topic string then the payload vector, right after the table.
fn put_topic_and_payload(out: &mut BytesMut, topic: &str, payload: &[u8]) {
    out.put_u32_le(topic.len() as u32);
    out.put_slice(topic.as_bytes());
    out.put_u8(0);
    out.put_bytes(0, pad4(topic.len() + 1));
    out.put_u32_le(payload.len() as u32);
    out.put_slice(payload);
}

/// Offsets of the topic and payload from the offset fields that name them.
fn string_offsets(
    table_len: usize,
    topic: &str,
    topic_field: u16,
    payload_field: u16,
) -> (u32, u32) {
    let topic_at = BODY_TABLE + table_len;
    let payload_at = topic_at + 4 + topic.len() + 1 + pad4(topic.len() + 1);
    (
        (topic_at - (BODY_TABLE + topic_field as usize)) as u32,
        (payload_at - (BODY_TABLE + payload_field as usize)) as u32,
    )
}

fn body_len(table_len: usize, topic: &str, payload: &[u8]) -> usize {
    BODY_TABLE + table_len + 4 + topic.len() + 1 + pad4(topic.len() + 1) + 4 + payload.len()
}

/// Where a delivery's route struct starts, from the start of its frame
/// (length prefix included).
pub const DELIVERY_ROUTE_OFFSET: usize = LENGTH_PREFIX_LEN + BODY_TABLE + D_ROUTE as usize;

/// Append a header-less `Publish` frame, length prefix included.
pub fn publish(p: &Publish<'_>, out: &mut BytesMut) {
    debug_assert!(p.headers.is_empty());
    let len = body_len(P_TABLE_LEN, p.topic, p.payload);
    out.reserve(LENGTH_PREFIX_LEN + len);
    let mut fixed = Fixed::<{ LENGTH_PREFIX_LEN + BODY_TABLE + P_TABLE_LEN }>::new();
    fixed.head(
        len,
        fb::Body::Publish,
        P_TABLE_LEN,
        [P_PUBLISH_ID, P_TOPIC, P_PAYLOAD, P_TTL, P_QOS],
    );
    let (topic, payload) = string_offsets(P_TABLE_LEN, p.topic, P_TOPIC, P_PAYLOAD);
    fixed.u32(p.ttl_ms);
    fixed.u64(p.publish_id);
    fixed.u32(topic);
    fixed.u32(payload);
    fixed.u8(p.qos);
    fixed.zeros(3);
    out.put_slice(fixed.written());
    put_topic_and_payload(out, p.topic, p.payload);
}

/// Append a header-less `Delivery` frame, length prefix included; its route
/// is at [`DELIVERY_ROUTE_OFFSET`] from where it starts.
pub fn delivery(d: &Delivery<'_>, out: &mut BytesMut) {
    debug_assert!(d.headers.is_empty());
    let len = body_len(D_TABLE_LEN, d.topic, d.payload);
    out.reserve(LENGTH_PREFIX_LEN + len);
    let mut fixed = Fixed::<{ LENGTH_PREFIX_LEN + BODY_TABLE + D_TABLE_LEN }>::new();
    fixed.head(
        len,
        fb::Body::Delivery,
        D_TABLE_LEN,
        [D_ROUTE, D_TOPIC, D_PAYLOAD, D_MESSAGE_ID, D_TIMESTAMP],
    );
    let (topic, payload) = string_offsets(D_TABLE_LEN, d.topic, D_TOPIC, D_PAYLOAD);
    fixed.u32(topic);
    debug_assert_eq!(fixed.len, DELIVERY_ROUTE_OFFSET);
    fixed.u64(d.route.subscription_id);
    fixed.u64(d.route.delivery_id);
    fixed.u32(d.route.delivery_count);
    fixed.zeros(4);
    fixed.u64(d.message_id);
    fixed.u64(d.timestamp_ms);
    fixed.u32(payload);
    out.put_slice(fixed.written());
    put_topic_and_payload(out, d.topic, d.payload);
}
