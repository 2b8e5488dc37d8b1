//! The list of durable subscriptions and queue groups, kept beside the
//! write-ahead log in one small file that is replaced atomically (write a
//! temporary file, fsync, rename, fsync the directory) whenever one is
//! created or deleted.
//!
//! Why not records in the log: retention deletes old segments, and a
//! subscription created long ago must outlive the segment that recorded it.
//! The file names each queue's `since` LSN — the first log position it
//! keeps messages from — so replaying the log rebuilds exactly what each
//! queue held.
//!
//! Format (version 2): a version line, one line per queue
//! `durable|group <since> <name> <pattern> [<detached_ms>]` (names and
//! patterns contain no whitespace, by QOS-3 and TOPIC-1; `detached_ms`, when
//! present, is when the queue's last consumer left, in ms since the Unix
//! epoch, so that `durable.detached_expiry_ms` counts across restarts), then
//! `crc32 <8 hex digits>`: the CRC32 (IEEE) of every byte before that line.
//! Version 1 files (four fields, no checksum line) are still read; the next
//! rewrite makes them version 2.
//!
//! Why a checksum when the file is replaced atomically: the rename protects
//! against a torn write, not against a damaged disk block or a stray edit,
//! and a damaged name or `since` would be read as another queue, or as one
//! that keeps the wrong messages, without a word. A file that fails its
//! checksum or does not parse stops the broker at start with an error naming
//! it (`load`): it is never read as empty, which would delete every durable
//! subscription's messages at the first release.

use std::io::{Read, Write};
use std::path::Path;

use crate::wal::storage::{OpenMode, Storage};
use crate::wal::{Lsn, WalError};

pub const FILE_NAME: &str = "subscriptions";
const VERSION_LINE: &str = "blipmq-subscriptions 2";
/// Written before the checksum line existed; read, never written.
const VERSION_1_LINE: &str = "blipmq-subscriptions 1";
const CHECKSUM_PREFIX: &str = "crc32 ";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDefinition {
    pub name: String,
    pub pattern: String,
    /// A queue group (shared) rather than a single-consumer durable subscription.
    pub group: bool,
    pub since: Lsn,
    /// When it was detached (ms since the Unix epoch), once recorded.
    pub detached_ms: Option<u64>,
}

pub fn render(queues: &[QueueDefinition]) -> String {
    let mut text = format!("{VERSION_LINE}\n");
    for q in queues {
        let kind = if q.group { "group" } else { "durable" };
        text.push_str(&format!("{kind} {} {} {}", q.since, q.name, q.pattern));
        if let Some(detached_ms) = q.detached_ms {
            text.push_str(&format!(" {detached_ms}"));
        }
        text.push('\n');
    }
    let crc = crc32fast::hash(text.as_bytes());
    text.push_str(&format!("{CHECKSUM_PREFIX}{crc:08x}\n"));
    text
}

pub fn parse(text: &str) -> Result<Vec<QueueDefinition>, String> {
    let first = text.split('\n').next().unwrap_or("");
    // Version 1 had no detach times.
    let (lines, detach_times) = match first {
        VERSION_LINE => (checked_lines(text)?, true),
        VERSION_1_LINE => (&text[first.len()..], false),
        _ => {
            return Err(format!(
                "the first line is not {VERSION_LINE:?} (or {VERSION_1_LINE:?})"
            ))
        }
    };
    let mut names = std::collections::HashSet::new();
    lines
        .split('\n')
        .skip(1)
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .map(|(i, line)| {
            let fields: Vec<&str> = line.split(' ').collect();
            let (kind, since, name, pattern, detached) = match fields[..] {
                [kind, since, name, pattern] => (kind, since, name, pattern, None),
                [kind, since, name, pattern, detached] if detach_times => {
                    (kind, since, name, pattern, Some(detached))
                }
                _ => return Err(format!("line {}: expected 4 fields", i + 2)),
            };
            let detached_ms = detached
                .map(|ms| {
                    ms.parse()
                        .map_err(|_| format!("line {}: bad detach time {ms:?}", i + 2))
                })
                .transpose()?;
            let group = match kind {
                "durable" => false,
                "group" => true,
                other => return Err(format!("line {}: unknown kind {other:?}", i + 2)),
            };
            let since = since
                .parse()
                .map_err(|_| format!("line {}: bad LSN {since:?}", i + 2))?;
            // What the broker accepts on the wire (QOS-3, TOPIC-1) and so
            // ever writes: anything else is damage or a bad hand edit, and
            // must not come back as a different queue (a name ending in
            // `\r` would lose it on the next rewrite).
            for (what, field) in [("name", name), ("pattern", pattern)] {
                if field.is_empty() || field.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(format!("line {}: bad {what} {field:?}", i + 2));
                }
            }
            if !names.insert(name) {
                return Err(format!("line {}: {name:?} is defined twice", i + 2));
            }
            Ok(QueueDefinition {
                name: name.to_string(),
                pattern: pattern.to_string(),
                group,
                since,
                detached_ms,
            })
        })
        .collect()
}

/// A version 2 file's text from the end of its version line to its
/// checksum line, once the checksum matches.
fn checked_lines(text: &str) -> Result<&str, String> {
    let damaged = |what: &str| format!("{what}: the file is damaged or cut short");
    let body = text
        .strip_suffix('\n')
        .ok_or_else(|| damaged("no newline at the end"))?;
    let covered = body.rfind('\n').map_or(0, |i| i + 1);
    let stated = body[covered..]
        .strip_prefix(CHECKSUM_PREFIX)
        // Exactly as rendered (lowercase): no two spellings of one value.
        .filter(|hex| hex.len() == 8 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .ok_or_else(|| damaged("the last line is not its checksum"))?;
    let actual = crc32fast::hash(&text.as_bytes()[..covered]);
    if stated != actual {
        return Err(damaged(&format!(
            "checksum mismatch (the file says {stated:08x}, its content is {actual:08x})"
        )));
    }
    Ok(&text[VERSION_LINE.len()..covered])
}

/// Read the file in `dir`; no file means no queues.
pub fn load(storage: &dyn Storage, dir: &Path) -> Result<Vec<QueueDefinition>, WalError> {
    let path = dir.join(FILE_NAME);
    let mut text = String::new();
    let read = storage
        .open(&path, OpenMode::Read)
        .and_then(|mut file| file.read_to_string(&mut text));
    match read {
        Ok(_) => parse(&text).map_err(|problem| WalError::Io {
            context: format!("durable subscription manifest {}", path.display()),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{problem} (not read as empty, which would drop every durable \
                     subscription: restore the file, or move it aside to start without them)"
                ),
            ),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(WalError::Failed(format!("read {}: {e}", path.display()))),
    }
}

/// Replace the file in `dir` atomically; `sync` makes it durable first.
pub fn store(
    storage: &dyn Storage,
    dir: &Path,
    queues: &[QueueDefinition],
    sync: bool,
) -> Result<(), WalError> {
    let path = dir.join(FILE_NAME);
    let temporary = dir.join(format!("{FILE_NAME}.tmp"));
    let failed =
        |what: &str, e: std::io::Error| WalError::Failed(format!("{what} {}: {e}", path.display()));
    let mut file = storage
        .open(&temporary, OpenMode::Truncate)
        .map_err(|e| failed("create", e))?;
    file.write_all(render(queues).as_bytes())
        .map_err(|e| failed("write", e))?;
    if sync {
        file.sync_all().map_err(|e| failed("fsync", e))?;
    }
    storage
        .rename(&temporary, &path)
        .map_err(|e| failed("replace", e))?;
    if sync {
        crate::wal::sync_dir_in(storage, dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::OsStorage;
    use std::fs;

    #[test]
    fn round_trip_and_errors() {
        let queues = vec![
            QueueDefinition {
                name: "worker".into(),
                pattern: "jobs.>".into(),
                group: false,
                since: 0,
                detached_ms: None,
            },
            QueueDefinition {
                name: "resizers".into(),
                pattern: "images.*".into(),
                group: true,
                since: 12345,
                detached_ms: Some(1_700_000_000_000),
            },
        ];
        assert_eq!(parse(&render(&queues)).unwrap(), queues);
        assert_eq!(parse(&render(&[])).unwrap(), vec![]);
        assert!(parse("").is_err());
        assert!(parse("blipmq-subscriptions 1\ndurable x y\n").is_err());
        assert!(parse("blipmq-subscriptions 1\nother 1 x y\n").is_err());
        assert!(parse("blipmq-subscriptions 1\ndurable -1 x y\n").is_err());
        assert!(parse("blipmq-subscriptions 3\n").is_err());
        // Version 1 never had a detach time.
        assert!(parse("blipmq-subscriptions 1\ndurable 1 x y 5\n").is_err());
        // Found by the fuzzer: a pattern ending in `\r` read back as another
        // pattern after a rewrite. Names and patterns the broker would
        // refuse, and a name defined twice, are damage.
        assert!(parse("blipmq-subscriptions 1\ndurable 0 a b\r").is_err());
        assert!(parse("blipmq-subscriptions 1\ndurable 0 a b\r\r\n").is_err());
        assert!(parse("blipmq-subscriptions 1\ndurable 0  b\n").is_err());
        assert!(parse("blipmq-subscriptions 1\ndurable 0 a b\ngroup 0 a c\n").is_err());
    }

    #[test]
    fn version_1_files_are_still_read() {
        let text = "blipmq-subscriptions 1\ndurable 7 worker jobs.>\ngroup 9 g x\n";
        let queues = parse(text).unwrap();
        assert_eq!(queues.len(), 2);
        assert_eq!((queues[0].since, queues[0].name.as_str()), (7, "worker"));
        assert!(queues[1].group);
        // Rewritten, it is version 2 with the same content.
        assert!(render(&queues).starts_with("blipmq-subscriptions 2\n"));
        assert_eq!(parse(&render(&queues)).unwrap(), queues);
    }

    #[test]
    fn any_damage_to_a_version_2_file_is_an_error() {
        let queues = vec![QueueDefinition {
            name: "worker".into(),
            pattern: "jobs.>".into(),
            group: false,
            since: 12,
            detached_ms: Some(99),
        }];
        let text = render(&queues);
        // Every single flipped bit is caught (a name or LSN that still
        // parses would otherwise be read as another queue).
        for at in 0..text.len() {
            for bit in 0..8 {
                let mut damaged = text.clone().into_bytes();
                damaged[at] ^= 1 << bit;
                if let Ok(damaged) = String::from_utf8(damaged) {
                    assert!(parse(&damaged).is_err(), "byte {at} bit {bit}: {damaged:?}");
                }
            }
        }
        // Cut short anywhere, including just before the checksum line.
        for end in 0..text.len() {
            assert!(parse(&text[..end]).is_err(), "cut at {end}");
        }
        let e = parse(&text.replace("worker", "workes")).unwrap_err();
        assert!(e.contains("checksum mismatch"), "{e}");
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it_never_an_empty_list() {
        let dir = tempfile::tempdir().unwrap();
        let one = QueueDefinition {
            name: "a".into(),
            pattern: "b".into(),
            group: false,
            since: 7,
            detached_ms: None,
        };
        store(&OsStorage, dir.path(), std::slice::from_ref(&one), true).unwrap();
        let path = dir.path().join(FILE_NAME);
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, text.replace("durable 7", "durable 8")).unwrap();
        let e = load(&OsStorage, dir.path()).unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        fs::write(&path, "").unwrap();
        assert!(
            load(&OsStorage, dir.path()).is_err(),
            "an empty file is not an empty list"
        );
    }

    #[test]
    fn store_replaces_and_load_reads() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(&OsStorage, dir.path()).unwrap().is_empty());
        let one = QueueDefinition {
            name: "a".into(),
            pattern: "b".into(),
            group: false,
            since: 7,
            detached_ms: None,
        };
        let two = QueueDefinition {
            name: "c".into(),
            group: true,
            ..one.clone()
        };
        store(&OsStorage, dir.path(), std::slice::from_ref(&one), true).unwrap();
        store(&OsStorage, dir.path(), &[one.clone(), two.clone()], true).unwrap();
        assert_eq!(load(&OsStorage, dir.path()).unwrap(), vec![one, two]);
        assert!(!dir.path().join("subscriptions.tmp").exists());
    }
}
