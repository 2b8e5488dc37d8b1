//! QoS 0 publishes packed by the Kotlin (or Swift) layer into one byte
//! array, so that many cross the foreign boundary in one call (each call
//! through JNA costs far more than encoding a message).
//!
//! An entry, little-endian: `ttl_ms: u32`, `topic_len: u16`, the topic in
//! UTF-8, `payload_len: u32`, the payload. Entries follow each other with
//! nothing in between.

use blipmq::PublishBatch;

use crate::error::NativeError;

/// Push every entry of `packed` onto `batch`, in order. An entry the client
/// refuses (a topic or size the layer above has not seen refused yet) is
/// left out and the others are kept: the first refusal is returned beside
/// them, for the layer above to report. A malformed packing is a bug in
/// that layer: it fails the whole call, with `batch` left as it was.
pub fn unpack(batch: &mut PublishBatch, packed: &[u8]) -> Result<Option<NativeError>, NativeError> {
    // Check the packing whole before pushing any of it.
    for entry in (Entries { rest: packed }) {
        entry?;
    }
    let mut refused = None;
    for entry in (Entries { rest: packed }) {
        let (ttl_ms, topic, payload) = entry?;
        if let Err(e) = batch.push(topic, payload, ttl_ms) {
            refused.get_or_insert(e.into());
        }
    }
    Ok(refused)
}

struct Entries<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<(u32, &'a str, &'a [u8]), NativeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let entry = self.entry();
        if entry.is_err() {
            // Stop after the first malformed entry.
            self.rest = &[];
        }
        Some(entry)
    }
}

impl<'a> Entries<'a> {
    fn entry(&mut self) -> Result<(u32, &'a str, &'a [u8]), NativeError> {
        let ttl_ms = u32::from_le_bytes(self.take::<4>()?);
        let topic_len = u16::from_le_bytes(self.take::<2>()?) as usize;
        let topic = std::str::from_utf8(self.slice(topic_len)?)
            .map_err(|_| malformed("a topic is not UTF-8"))?;
        let payload_len = u32::from_le_bytes(self.take::<4>()?) as usize;
        let payload = self.slice(payload_len)?;
        Ok((ttl_ms, topic, payload))
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], NativeError> {
        let bytes = self.slice(N)?;
        Ok(bytes.try_into().expect("slice of N bytes"))
    }

    fn slice(&mut self, len: usize) -> Result<&'a [u8], NativeError> {
        if self.rest.len() < len {
            return Err(malformed("an entry runs past the end"));
        }
        let (head, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(head)
    }
}

fn malformed(detail: &str) -> NativeError {
    NativeError::from_code(
        blipmq::ErrorCode::InvalidArgument,
        format!("malformed publish batch: {detail}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(out: &mut Vec<u8>, ttl_ms: u32, topic: &str, payload: &[u8]) {
        out.extend_from_slice(&ttl_ms.to_le_bytes());
        out.extend_from_slice(&(topic.len() as u16).to_le_bytes());
        out.extend_from_slice(topic.as_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(payload);
    }

    #[test]
    fn entries_are_read_in_order() {
        let mut packed = Vec::new();
        entry(&mut packed, 0, "a.b", b"one");
        entry(&mut packed, 5, "bad..topic", b"two");
        entry(&mut packed, 0, "a.c", b"");
        let read: Vec<_> = Entries { rest: &packed }.map(Result::unwrap).collect();
        assert_eq!(
            read,
            vec![
                (0, "a.b", &b"one"[..]),
                (5, "bad..topic", &b"two"[..]),
                (0, "a.c", &b""[..])
            ]
        );
    }

    #[test]
    fn a_truncated_entry_is_malformed() {
        let mut packed = Vec::new();
        entry(&mut packed, 0, "a.b", b"one");
        packed.pop();
        let error = Entries { rest: &packed }.next().unwrap().unwrap_err();
        assert_eq!(error.code(), 301);
        let mut packed = Vec::new();
        entry(&mut packed, 0, "a.b", b"one");
        packed[6] = 0xff;
        assert!(Entries { rest: &packed }.next().unwrap().is_err());
    }
}
