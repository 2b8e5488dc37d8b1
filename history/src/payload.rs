//! Self-checking payloads: each names its key and topic, carries a body that
//! is a pure function of its key and length, and ends with a checksum. A
//! consumer can therefore tell, from the delivery alone, which message it
//! got and whether a single byte of it changed, without the publisher's
//! records.
//!
//! Layout: `bh1|<publisher>|<seq>|<topic>|<len>|<body: len bytes>|<fnv1a-32 hex>`.

use crate::event::{Content, Corruption, Key};

/// The header every published message carries, holding its key again, so
/// that headers are checked to travel intact too (HDR-1).
pub const KEY_HEADER: &str = "history-key";

const MAGIC: &str = "bh1";

/// The payload of message `key` on `topic`, with a body of `body_len` bytes.
pub fn encode(key: Key, topic: &str, body_len: usize) -> Vec<u8> {
    let mut out = format!("{MAGIC}|{}|{}|{topic}|{body_len}|", key.publisher, key.seq).into_bytes();
    out.reserve(body_len + 9);
    let mut state = u64::from(key.publisher) << 32 | u64::from(key.seq);
    for chunk in 0..body_len.div_ceil(8) {
        let word = splitmix64(&mut state);
        let take = (body_len - chunk * 8).min(8);
        // Printable, so a corrupt payload can be read in a report.
        out.extend(word.to_le_bytes()[..take].iter().map(|b| b'a' + b % 26));
    }
    let sum = fnv1a32(&out);
    out.extend(format!("|{sum:08x}").bytes());
    out
}

/// The value of [`KEY_HEADER`] for `key`.
pub fn key_header(key: Key) -> String {
    key.to_string()
}

/// Judge a delivery: which message it claims to be, and whether payload,
/// topic and key header are exactly what that message's publisher sent.
pub fn verify(
    delivered_topic: &str,
    payload: &[u8],
    key_header: Option<&[u8]>,
) -> (Option<Key>, Content) {
    let Some((key, topic, body_len)) = parse_head(payload) else {
        return (None, Content::Corrupt(Corruption::Unreadable));
    };
    // Rebuilding from the head and comparing whole covers body, length and
    // checksum at once.
    if encode(key, topic, body_len) != payload {
        return (Some(key), Content::Corrupt(Corruption::Altered));
    }
    if topic != delivered_topic {
        return (
            Some(key),
            Content::Corrupt(Corruption::WrongTopic {
                delivered: delivered_topic.to_string(),
            }),
        );
    }
    if key_header != Some(key_header_bytes(key).as_slice()) {
        return (Some(key), Content::Corrupt(Corruption::WrongHeader));
    }
    (Some(key), Content::Intact)
}

fn key_header_bytes(key: Key) -> Vec<u8> {
    key_header(key).into_bytes()
}

/// Key, topic and body length from the head; `None` if it is not one.
fn parse_head(payload: &[u8]) -> Option<(Key, &str, usize)> {
    // The head is ASCII up to the fifth `|`; the body is never parsed.
    let mut fields = payload.splitn(6, |&b| b == b'|');
    let mut text = || std::str::from_utf8(fields.next()?).ok();
    if text()? != MAGIC {
        return None;
    }
    let publisher = text()?.parse().ok()?;
    let seq = text()?.parse().ok()?;
    let topic = text()?;
    let body_len = text()?.parse().ok()?;
    Some((Key { publisher, seq }, topic, body_len))
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: Key = Key::new(3, 1234);

    fn header() -> Vec<u8> {
        key_header(KEY).into_bytes()
    }

    #[test]
    fn an_intact_delivery_names_its_key() {
        for len in [0, 1, 7, 8, 9, 1000] {
            let payload = encode(KEY, "a.b", len);
            assert_eq!(
                verify("a.b", &payload, Some(&header())),
                (Some(KEY), Content::Intact),
                "body of {len} bytes"
            );
        }
    }

    #[test]
    fn every_single_byte_change_is_caught() {
        let payload = encode(KEY, "a.b", 40);
        for i in 0..payload.len() {
            let mut bad = payload.clone();
            bad[i] ^= 0x01;
            let (_, content) = verify("a.b", &bad, Some(&header()));
            assert_ne!(content, Content::Intact, "flip at byte {i}");
        }
        let (_, truncated) = verify("a.b", &payload[..payload.len() - 1], Some(&header()));
        assert_ne!(truncated, Content::Intact);
    }

    #[test]
    fn foreign_bytes_are_unreadable() {
        assert_eq!(
            verify("a.b", b"hello", None),
            (None, Content::Corrupt(Corruption::Unreadable))
        );
        assert_eq!(
            verify("a.b", b"", None).1,
            Content::Corrupt(Corruption::Unreadable)
        );
    }

    #[test]
    fn topic_and_header_are_part_of_the_content() {
        let payload = encode(KEY, "a.b", 10);
        assert_eq!(
            verify("a.c", &payload, Some(&header())).1,
            Content::Corrupt(Corruption::WrongTopic {
                delivered: "a.c".into()
            })
        );
        assert_eq!(
            verify("a.b", &payload, None).1,
            Content::Corrupt(Corruption::WrongHeader)
        );
        assert_eq!(
            verify("a.b", &payload, Some(b"p3-s1235")).1,
            Content::Corrupt(Corruption::WrongHeader)
        );
    }

    #[test]
    fn bodies_differ_between_keys() {
        let a = encode(Key::new(1, 1), "t", 64);
        let b = encode(Key::new(1, 2), "t", 64);
        assert_ne!(a[a.len() - 73..], b[b.len() - 73..]);
    }
}
