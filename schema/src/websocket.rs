//! How frames are packed into WebSocket messages (SPEC WS-1, WS-3): each
//! binary message carries one or more whole frames, and a sender puts no
//! more than [`WS_BATCH_LIMIT`] bytes of frames in one message, unless a
//! single frame is larger (it then goes alone).

use crate::LENGTH_PREFIX_LEN;

/// The most bytes of frames a sender packs into one WebSocket message; a
/// larger frame travels alone. A broker reads messages of this size
/// whatever its frame limit, so a client can pack without knowing it.
pub const WS_BATCH_LIMIT: usize = 64 * 1024;

/// The length of the frame at the start of `bytes`, prefix included, if
/// the whole frame is there.
fn whole_frame_len(bytes: &[u8]) -> Option<usize> {
    let prefix = bytes.get(..LENGTH_PREFIX_LEN)?;
    let len = LENGTH_PREFIX_LEN + u32::from_le_bytes(prefix.try_into().ok()?) as usize;
    (len <= bytes.len()).then_some(len)
}

/// The next message to send from `frames` (whole frames, maybe followed by
/// the start of one): `(length, start of its last frame)`, taking whole
/// frames while the message stays within [`WS_BATCH_LIMIT`] (at least one
/// frame), or `None` when not one frame is whole.
pub fn next_message(frames: &[u8]) -> Option<(usize, usize)> {
    let mut end = whole_frame_len(frames)?;
    let mut last = 0;
    while let Some(len) = whole_frame_len(&frames[end..]) {
        if end + len > WS_BATCH_LIMIT {
            break;
        }
        last = end;
        end += len;
    }
    Some((end, last))
}

/// `Ok` when a received message is one or more whole frames (WS-1), else
/// what is wrong with it.
pub fn check_message(message: &[u8]) -> Result<(), String> {
    if message.is_empty() {
        return Err("an empty message: a message carries whole frames".to_string());
    }
    let mut rest = message;
    while !rest.is_empty() {
        match whole_frame_len(rest) {
            Some(len) => rest = &rest[len..],
            None => {
                return Err(format!(
                    "a message ends inside a frame ({} of its {} bytes are a partial frame)",
                    rest.len(),
                    message.len()
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: usize) -> Vec<u8> {
        let mut f = (body as u32).to_le_bytes().to_vec();
        f.resize(LENGTH_PREFIX_LEN + body, 7);
        f
    }

    #[test]
    fn messages_take_whole_frames_up_to_the_limit() {
        assert_eq!(next_message(&[]), None);
        assert_eq!(next_message(&frame(10)[..9]), None);
        let two = [frame(10), frame(20)].concat();
        assert_eq!(next_message(&two), Some((38, 14)));
        // A partial frame after whole ones stays behind.
        let partial = [frame(10), frame(20)[..5].to_vec()].concat();
        assert_eq!(next_message(&partial), Some((14, 0)));
        // At the limit the message ends; a larger frame goes alone.
        let half = WS_BATCH_LIMIT / 2 - LENGTH_PREFIX_LEN;
        let three = [frame(half), frame(half), frame(1)].concat();
        assert_eq!(
            next_message(&three),
            Some((WS_BATCH_LIMIT, WS_BATCH_LIMIT / 2))
        );
        let big = [frame(WS_BATCH_LIMIT), frame(1)].concat();
        assert_eq!(
            next_message(&big),
            Some((WS_BATCH_LIMIT + LENGTH_PREFIX_LEN, 0))
        );
    }

    #[test]
    fn a_message_must_be_whole_frames() {
        assert!(check_message(&frame(3)).is_ok());
        assert!(check_message(&[frame(3), frame(0), frame(9)].concat()).is_ok());
        assert!(check_message(&[]).is_err());
        assert!(check_message(&[1, 0]).is_err());
        assert!(check_message(&frame(3)[..6]).is_err());
        assert!(check_message(&[frame(3), frame(9)[..12].to_vec()].concat()).is_err());
        assert!(check_message(&[frame(3), vec![0, 0]].concat()).is_err());
    }
}
