//! A fast path for the hot frames: reading a `Publish` (broker side) or a
//! `Delivery` (client side), and locating the route inside a freshly encoded
//! `Delivery`, without the generic FlatBuffers
//! verifier (which walked every table through closures and was a fifth of the
//! broker's CPU time at small payloads).
//!
//! Every read is bounds- and alignment-checked by hand, exactly the checks
//! the verifier would make for these fixed shapes. Anything unusual — a
//! publish with headers, a missing field, an offset out of range — returns
//! `None`, and the caller falls back to the full verifier, which then
//! accepts or names the problem. So the fast path can only ever accept what
//! the verifier accepts, and decode it the same way (checked against each
//! other by `tests/fast_decode.rs` on generated and mutated frames).

use crate::fb;
use crate::frame::{Delivery, Frame, Publish, Route};

// The helpers below are forced inline: called, they returned their
// `Option`s through the stack in shapes the next read could not forward
// from (a store-forwarding stall on every frame, about half of `body`'s
// time in a profile of the broker).

/// A little-endian scalar at `pos`, if in bounds and aligned to its size
/// (FlatBuffers aligns scalars relative to the buffer start).
#[inline(always)]
fn scalar<const N: usize>(buf: &[u8], pos: usize) -> Option<[u8; N]> {
    if pos % N != 0 {
        return None;
    }
    buf.get(pos..pos.checked_add(N)?)?.try_into().ok()
}

#[inline(always)]
fn u16_at(buf: &[u8], pos: usize) -> Option<u16> {
    scalar::<2>(buf, pos).map(u16::from_le_bytes)
}

#[inline(always)]
fn u32_at(buf: &[u8], pos: usize) -> Option<u32> {
    scalar::<4>(buf, pos).map(u32::from_le_bytes)
}

#[inline(always)]
fn u64_at(buf: &[u8], pos: usize) -> Option<u64> {
    scalar::<8>(buf, pos).map(u64::from_le_bytes)
}

/// A table at `pos`: where each of its fields is.
struct Table {
    pos: usize,
    vtable: usize,
    vtable_len: usize,
}

impl Table {
    #[inline(always)]
    fn at(buf: &[u8], pos: usize) -> Option<Table> {
        let soffset = i32::from_le_bytes(scalar::<4>(buf, pos)?);
        let vtable = usize::try_from(pos as i64 - i64::from(soffset)).ok()?;
        let vtable_len = usize::from(u16_at(buf, vtable)?);
        let table_len = usize::from(u16_at(buf, vtable + 2)?);
        if vtable_len < 4 || vtable_len % 2 != 0 || buf.len() < vtable + vtable_len {
            return None;
        }
        if buf.len() < pos.checked_add(table_len)? {
            return None;
        }
        Some(Table {
            pos,
            vtable,
            vtable_len,
        })
    }

    /// The absolute position of field `slot`, `Ok(None)` when absent.
    #[inline(always)]
    fn field(&self, buf: &[u8], slot: u16) -> Option<Option<usize>> {
        let slot = usize::from(slot);
        if slot + 2 > self.vtable_len {
            return Some(None);
        }
        match u16_at(buf, self.vtable + slot)? {
            0 => Some(None),
            offset => Some(Some(self.pos + usize::from(offset))),
        }
    }

    /// The target of the offset field `slot` (`Ok(None)` when absent).
    #[inline(always)]
    fn indirect(&self, buf: &[u8], slot: u16) -> Option<Option<usize>> {
        let Some(pos) = self.field(buf, slot)? else {
            return Some(None);
        };
        let target = pos.checked_add(u32_at(buf, pos)? as usize)?;
        (target < buf.len()).then_some(Some(target))
    }
}

/// A `[ubyte]` vector at `pos`.
#[inline(always)]
fn bytes_at(buf: &[u8], pos: usize) -> Option<&[u8]> {
    let len = u32_at(buf, pos)? as usize;
    let start = pos + 4;
    buf.get(start..start.checked_add(len)?)
}

/// A string at `pos`: UTF-8 followed by its NUL terminator.
#[inline(always)]
fn str_at(buf: &[u8], pos: usize) -> Option<&str> {
    let bytes = bytes_at(buf, pos)?;
    let end = pos + 4 + bytes.len();
    if buf.get(end) != Some(&0) {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

/// The envelope's body table and its type.
#[inline(always)]
fn body(buf: &[u8]) -> Option<(fb::Body, Table)> {
    let root = Table::at(buf, u32_at(buf, 0)? as usize)?;
    let kind = match root.field(buf, fb::Envelope::VT_BODY_TYPE)? {
        Some(pos) => *buf.get(pos)?,
        None => return None,
    };
    let body = Table::at(buf, root.indirect(buf, fb::Envelope::VT_BODY)??)?;
    Some((fb::Body(kind), body))
}

/// A header-less `Publish` or `Delivery` frame body, or `None` for anything
/// else (other frames, headers, anything the verifier should look at).
pub fn frame(buf: &[u8]) -> Option<Frame<'_>> {
    let (kind, t) = body(buf)?;
    match kind {
        fb::Body::Publish => publish(buf, &t).map(Frame::Publish),
        fb::Body::Delivery => delivery(buf, &t).map(Frame::Delivery),
        _ => None,
    }
}

/// Only an absent or empty header vector stays on the fast path.
#[inline(always)]
fn no_headers(buf: &[u8], t: &Table, slot: u16) -> Option<()> {
    match t.indirect(buf, slot)? {
        Some(headers) => (u32_at(buf, headers)? == 0).then_some(()),
        None => Some(()),
    }
}

#[inline(always)]
fn u64_field(buf: &[u8], t: &Table, slot: u16) -> Option<u64> {
    match t.field(buf, slot)? {
        Some(pos) => u64_at(buf, pos),
        None => Some(0),
    }
}

#[inline(always)]
fn bytes_field<'a>(buf: &'a [u8], t: &Table, slot: u16) -> Option<&'a [u8]> {
    match t.indirect(buf, slot)? {
        Some(pos) => bytes_at(buf, pos),
        None => Some(&[]),
    }
}

fn delivery<'a>(buf: &'a [u8], t: &Table) -> Option<Delivery<'a>> {
    no_headers(buf, t, fb::Delivery::VT_HEADERS)?;
    let route = t.field(buf, fb::Delivery::VT_ROUTE)??;
    // The whole 24-byte struct (padding included) must be in the buffer.
    if route % 8 != 0 || route.checked_add(24)? > buf.len() {
        return None;
    }
    let route = Route {
        subscription_id: u64_at(buf, route)?,
        delivery_id: u64_at(buf, route + 8)?,
        delivery_count: u32_at(buf, route + 16)?,
    };
    Some(Delivery {
        route,
        topic: str_at(buf, t.indirect(buf, fb::Delivery::VT_TOPIC)??)?,
        payload: bytes_field(buf, t, fb::Delivery::VT_PAYLOAD)?,
        message_id: u64_field(buf, t, fb::Delivery::VT_MESSAGE_ID)?,
        timestamp_ms: u64_field(buf, t, fb::Delivery::VT_TIMESTAMP_MS)?,
        headers: Vec::new(),
    })
}

fn publish<'a>(buf: &'a [u8], t: &Table) -> Option<Publish<'a>> {
    no_headers(buf, t, fb::Publish::VT_HEADERS)?;
    let publish_id = u64_field(buf, t, fb::Publish::VT_PUBLISH_ID)?;
    let topic = str_at(buf, t.indirect(buf, fb::Publish::VT_TOPIC)??)?;
    let payload = bytes_field(buf, t, fb::Publish::VT_PAYLOAD)?;
    let ttl_ms = match t.field(buf, fb::Publish::VT_TTL_MS)? {
        Some(pos) => u32_at(buf, pos)?,
        None => 0,
    };
    let qos = match t.field(buf, fb::Publish::VT_QOS)? {
        Some(pos) => *buf.get(pos)?,
        None => 0,
    };
    Some(Publish {
        publish_id,
        topic,
        payload,
        ttl_ms,
        qos,
        headers: Vec::new(),
    })
}

/// Where the `DeliveryRoute` struct sits in an encoded `Delivery` body.
pub fn delivery_route_offset(buf: &[u8]) -> Option<usize> {
    let (kind, t) = body(buf)?;
    if kind != fb::Body::Delivery {
        return None;
    }
    let pos = t.field(buf, fb::Delivery::VT_ROUTE)??;
    // The struct is 24 bytes, 8-aligned.
    (pos % 8 == 0 && pos + 24 <= buf.len()).then_some(pos)
}
