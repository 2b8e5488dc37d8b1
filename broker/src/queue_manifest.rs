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
//! Format: a version line, then one line per queue:
//! `durable|group <since> <name> <pattern>` (names and patterns contain no
//! whitespace, by QOS-3 and TOPIC-1).

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use crate::wal::{Lsn, WalError};

pub const FILE_NAME: &str = "subscriptions";
const VERSION_LINE: &str = "blipmq-subscriptions 1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDefinition {
    pub name: String,
    pub pattern: String,
    /// A queue group (shared) rather than a single-consumer durable subscription.
    pub group: bool,
    pub since: Lsn,
}

pub fn render(queues: &[QueueDefinition]) -> String {
    let mut text = format!("{VERSION_LINE}\n");
    for q in queues {
        let kind = if q.group { "group" } else { "durable" };
        text.push_str(&format!("{kind} {} {} {}\n", q.since, q.name, q.pattern));
    }
    text
}

pub fn parse(text: &str) -> Result<Vec<QueueDefinition>, String> {
    let mut lines = text.lines();
    if lines.next() != Some(VERSION_LINE) {
        return Err(format!("the first line is not {VERSION_LINE:?}"));
    }
    lines
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .map(|(i, line)| {
            let fields: Vec<&str> = line.split(' ').collect();
            let [kind, since, name, pattern] = fields[..] else {
                return Err(format!("line {}: expected 4 fields", i + 2));
            };
            let group = match kind {
                "durable" => false,
                "group" => true,
                other => return Err(format!("line {}: unknown kind {other:?}", i + 2)),
            };
            let since = since
                .parse()
                .map_err(|_| format!("line {}: bad LSN {since:?}", i + 2))?;
            Ok(QueueDefinition {
                name: name.to_string(),
                pattern: pattern.to_string(),
                group,
                since,
            })
        })
        .collect()
}

/// Read the file in `dir`; no file means no queues.
pub fn load(dir: &Path) -> Result<Vec<QueueDefinition>, WalError> {
    let path = dir.join(FILE_NAME);
    match fs::read_to_string(&path) {
        Ok(text) => parse(&text)
            .map_err(|problem| WalError::Failed(format!("{}: {problem}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(WalError::Failed(format!("read {}: {e}", path.display()))),
    }
}

/// Replace the file in `dir` atomically; `sync` makes it durable first.
pub fn store(dir: &Path, queues: &[QueueDefinition], sync: bool) -> Result<(), WalError> {
    let path = dir.join(FILE_NAME);
    let temporary = dir.join(format!("{FILE_NAME}.tmp"));
    let failed =
        |what: &str, e: std::io::Error| WalError::Failed(format!("{what} {}: {e}", path.display()));
    let mut file = File::create(&temporary).map_err(|e| failed("create", e))?;
    file.write_all(render(queues).as_bytes())
        .map_err(|e| failed("write", e))?;
    if sync {
        file.sync_all().map_err(|e| failed("fsync", e))?;
    }
    fs::rename(&temporary, &path).map_err(|e| failed("replace", e))?;
    if sync {
        crate::wal::sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let queues = vec![
            QueueDefinition {
                name: "worker".into(),
                pattern: "jobs.>".into(),
                group: false,
                since: 0,
            },
            QueueDefinition {
                name: "resizers".into(),
                pattern: "images.*".into(),
                group: true,
                since: 12345,
            },
        ];
        assert_eq!(parse(&render(&queues)).unwrap(), queues);
        assert_eq!(parse(&render(&[])).unwrap(), vec![]);
        assert!(parse("").is_err());
        assert!(parse("blipmq-subscriptions 1\ndurable x y\n").is_err());
        assert!(parse("blipmq-subscriptions 1\nother 1 x y\n").is_err());
        assert!(parse("blipmq-subscriptions 1\ndurable -1 x y\n").is_err());
    }

    #[test]
    fn store_replaces_and_load_reads() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_empty());
        let one = QueueDefinition {
            name: "a".into(),
            pattern: "b".into(),
            group: false,
            since: 7,
        };
        store(dir.path(), std::slice::from_ref(&one), true).unwrap();
        store(dir.path(), &[one.clone(), one.clone()], true).unwrap();
        assert_eq!(load(dir.path()).unwrap(), vec![one.clone(), one]);
        assert!(!dir.path().join("subscriptions.tmp").exists());
    }
}
