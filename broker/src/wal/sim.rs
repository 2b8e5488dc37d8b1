//! An in-memory [`Storage`] for tests: faults on demand, process crashes and
//! power loss, deterministic under a seed.
//!
//! It keeps two views of the disk. What a running process sees (file
//! contents, directory entries) changes with every call; what survives a
//! power loss changes only with fsyncs: a file's data with `sync_data` /
//! `sync_all`, a directory entry (create, rename, unlink, mkdir) with
//! `sync_dir` of its parent. [`SimStorage::power_loss`] throws away
//! everything else, as a kernel losing its page cache would; a file whose
//! data was synced but whose name was not is gone. [`SimStorage::crash`]
//! models `kill -9`: the process's handles stop working, the page cache
//! survives.
//!
//! Faults are rules ([`Fault`]): an operation (optionally on paths
//! containing some text) fails with an errno, the first `times` times after
//! skipping `after` matches, or with a probability drawn from the seeded
//! generator. A write fault may be a short write: part of the buffer is
//! written, then the error.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::storage::{DirEntry, DirLock, OpenMode, Storage, StorageFile};

/// Linux errno values the tests inject.
pub mod errno {
    pub const EPERM: i32 = 1;
    pub const EIO: i32 = 5;
    pub const EMFILE: i32 = 24;
    pub const ENOSPC: i32 = 28;
}

/// A file operation a fault can hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Opening an existing file.
    Open,
    /// Creating a file (`CreateNew`, `Truncate`).
    Create,
    Read,
    Write,
    /// `sync_data` or `sync_all` of a file.
    Sync,
    SyncDir,
    SetLen,
    Remove,
    Rename,
    List,
    Mkdir,
}

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The operation fails with this errno and does nothing.
    Errno(i32),
    /// A write stores the first half of its buffer, then fails with this
    /// errno.
    ShortWrite(i32),
}

/// One fault rule. See the module docs.
#[derive(Debug, Clone)]
pub struct Fault {
    op: Op,
    path_contains: Option<String>,
    after: u64,
    times: Option<u64>,
    probability: f64,
    failure: Failure,
    /// Matches seen so far.
    seen: u64,
}

impl Fault {
    /// `op` fails with `errno`, every time, until limited.
    pub fn new(op: Op, errno: i32) -> Fault {
        Fault {
            op,
            path_contains: None,
            after: 0,
            times: None,
            probability: 1.0,
            failure: Failure::Errno(errno),
            seen: 0,
        }
    }

    /// A write that stores half its buffer, then fails with `errno`.
    pub fn short_write(errno: i32) -> Fault {
        Fault {
            failure: Failure::ShortWrite(errno),
            ..Fault::new(Op::Write, errno)
        }
    }

    /// Only on paths containing `text`.
    pub fn on(mut self, text: &str) -> Fault {
        self.path_contains = Some(text.to_string());
        self
    }

    /// Let the first `n` matching operations through.
    pub fn after(mut self, n: u64) -> Fault {
        self.after = n;
        self
    }

    /// Fail at most `n` times.
    pub fn times(mut self, n: u64) -> Fault {
        self.times = Some(n);
        self
    }

    /// Fail each matching operation with probability `p` (seeded).
    pub fn probability(mut self, p: f64) -> Fault {
        self.probability = p;
        self
    }
}

#[derive(Debug, Default, Clone)]
struct Inode {
    data: Vec<u8>,
    /// What a power loss leaves of `data`.
    synced: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    inodes: HashMap<u64, Inode>,
    files: BTreeMap<PathBuf, u64>,
    durable_files: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    durable_dirs: BTreeSet<PathBuf>,
    next_inode: u64,
    faults: Vec<Fault>,
    /// splitmix64 state.
    rng: u64,
    /// Bumped by every crash: handles of an older process fail.
    generation: u64,
    crashed: bool,
    locks: BTreeMap<PathBuf, u64>,
    /// Faults that fired, for tests to check that they happened.
    injected: u64,
}

impl State {
    fn random(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The failure the rules decide for `op` on `path`, if any.
    fn fault(&mut self, op: Op, path: &Path, generation: u64) -> Option<Failure> {
        if self.crashed || generation != self.generation {
            return Some(Failure::Errno(errno::EIO));
        }
        let text = path.to_string_lossy();
        for i in 0..self.faults.len() {
            let fault = &self.faults[i];
            if fault.op != op
                || fault
                    .path_contains
                    .as_deref()
                    .is_some_and(|t| !text.contains(t))
            {
                continue;
            }
            self.faults[i].seen += 1;
            let fault = &self.faults[i];
            if fault.seen <= fault.after {
                continue;
            }
            if fault.times.is_some_and(|t| fault.seen - fault.after > t) {
                continue;
            }
            let (probability, failure) = (fault.probability, fault.failure);
            if probability >= 1.0 || self.random() < probability {
                self.injected += 1;
                return Some(failure);
            }
        }
        None
    }

    fn check(&mut self, op: Op, path: &Path, generation: u64) -> io::Result<()> {
        match self.fault(op, path, generation) {
            None => Ok(()),
            Some(Failure::Errno(n) | Failure::ShortWrite(n)) => Err(os_error(n)),
        }
    }

    fn parent_exists(&self, path: &Path) -> bool {
        path.parent()
            .is_none_or(|p| p.as_os_str().is_empty() || self.dirs.contains(p))
    }
}

fn os_error(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

/// The simulated disk. Clones share it.
#[derive(Clone, Default)]
pub struct SimStorage {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimStorage").finish_non_exhaustive()
    }
}

impl SimStorage {
    /// An empty disk whose random faults follow `seed`.
    pub fn new(seed: u64) -> SimStorage {
        let storage = SimStorage::default();
        storage.state.lock().rng = seed;
        storage
    }

    pub fn inject(&self, fault: Fault) {
        self.state.lock().faults.push(fault);
    }

    pub fn clear_faults(&self) {
        self.state.lock().faults.clear();
    }

    /// How many faults fired so far.
    pub fn injected(&self) -> u64 {
        self.state.lock().injected
    }

    /// The process dies (kill -9): every handle and call fails until
    /// [`SimStorage::restart`]; written data stays in the page cache.
    pub fn crash(&self) {
        let mut state = self.state.lock();
        state.crashed = true;
        state.generation += 1;
    }

    /// The machine loses power: the process dies, and everything not made
    /// durable by an fsync is gone.
    pub fn power_loss(&self) {
        self.crash();
        let mut state = self.state.lock();
        // A directory survives if its entry and all its ancestors' did
        // (BTreeSet order visits parents before children).
        let mut dirs = BTreeSet::new();
        for dir in &state.durable_dirs {
            let parent_kept = dir
                .parent()
                .is_none_or(|p| p.as_os_str().is_empty() || dirs.contains(p));
            if parent_kept {
                dirs.insert(dir.clone());
            }
        }
        let dirs_now = dirs.clone();
        state.dirs = dirs;
        let survivors: BTreeMap<PathBuf, u64> = state
            .durable_files
            .iter()
            .filter(|(path, _)| path.parent().is_some_and(|p| dirs_now.contains(p)))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        state.durable_files = survivors.clone();
        state.files = survivors;
        let live: BTreeSet<u64> = state.files.values().copied().collect();
        state.inodes.retain(|inode, _| live.contains(inode));
        for inode in state.inodes.values_mut() {
            inode.data = inode.synced.clone();
        }
    }

    /// A new process starts: calls work again, locks of the dead one are
    /// gone (the kernel drops a process's `flock`s with it).
    pub fn restart(&self) {
        let mut state = self.state.lock();
        state.crashed = false;
        state.locks.clear();
    }

    /// A file's contents as the running process sees them.
    pub fn read(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.state.lock();
        let inode = state.files.get(path)?;
        Some(state.inodes[inode].data.clone())
    }

    /// Replaces a file's contents, durably (for tests that damage a log).
    pub fn write(&self, path: &Path, data: &[u8]) {
        let mut state = self.state.lock();
        let inode = match state.files.get(path) {
            Some(&inode) => inode,
            None => {
                state.next_inode += 1;
                let inode = state.next_inode;
                state.files.insert(path.to_path_buf(), inode);
                inode
            }
        };
        state.durable_files.insert(path.to_path_buf(), inode);
        state.inodes.insert(
            inode,
            Inode {
                data: data.to_vec(),
                synced: data.to_vec(),
            },
        );
    }

    /// Every file path, sorted.
    pub fn files(&self) -> Vec<PathBuf> {
        self.state.lock().files.keys().cloned().collect()
    }

    fn generation(&self) -> u64 {
        self.state.lock().generation
    }
}

struct SimFile {
    state: Arc<Mutex<State>>,
    path: PathBuf,
    inode: u64,
    pos: u64,
    mode: OpenMode,
    generation: u64,
}

impl SimFile {
    fn with_inode<T>(
        &self,
        op: Op,
        f: impl FnOnce(&mut Inode, Option<Failure>) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut state = self.state.lock();
        let failure = state.fault(op, &self.path, self.generation);
        if let Some(Failure::Errno(n)) = failure {
            return Err(os_error(n));
        }
        let inode = state
            .inodes
            .get_mut(&self.inode)
            .ok_or_else(|| os_error(errno::EIO))?;
        f(inode, failure)
    }
}

impl Read for SimFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let pos = self.pos as usize;
        let n = self.with_inode(Op::Read, |inode, _| {
            let available = inode.data.len().saturating_sub(pos);
            let n = available.min(buf.len());
            buf[..n].copy_from_slice(&inode.data[pos..pos + n]);
            Ok(n)
        })?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for SimFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.mode == OpenMode::Read {
            return Err(io::Error::other("not open for writing"));
        }
        let append = matches!(self.mode, OpenMode::Append | OpenMode::CreateNew);
        let pos = self.pos;
        let end = self.with_inode(Op::Write, |inode, failure| {
            let at = if append {
                inode.data.len()
            } else {
                pos as usize
            };
            let (take, error) = match failure {
                Some(Failure::ShortWrite(n)) => (buf.len() / 2, Some(n)),
                _ => (buf.len(), None),
            };
            if inode.data.len() < at + take {
                inode.data.resize(at + take, 0);
            }
            inode.data[at..at + take].copy_from_slice(&buf[..take]);
            match error {
                Some(n) => Err(os_error(n)),
                None => Ok(at + take),
            }
        })?;
        self.pos = end as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for SimFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let len = self.size()?;
        let target = match pos {
            SeekFrom::Start(n) => n as i128,
            SeekFrom::End(d) => len as i128 + d as i128,
            SeekFrom::Current(d) => self.pos as i128 + d as i128,
        };
        if target < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start",
            ));
        }
        self.pos = target as u64;
        Ok(self.pos)
    }
}

impl StorageFile for SimFile {
    fn sync_data(&self) -> io::Result<()> {
        self.with_inode(Op::Sync, |inode, _| {
            inode.synced = inode.data.clone();
            Ok(())
        })
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with_inode(Op::SetLen, |inode, _| {
            inode.data.resize(len as usize, 0);
            Ok(())
        })
    }

    fn size(&self) -> io::Result<u64> {
        let state = self.state.lock();
        if state.crashed || state.generation != self.generation {
            return Err(os_error(errno::EIO));
        }
        state
            .inodes
            .get(&self.inode)
            .map(|i| i.data.len() as u64)
            .ok_or_else(|| os_error(errno::EIO))
    }

    fn try_clone(&self) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(SimFile {
            state: Arc::clone(&self.state),
            path: self.path.clone(),
            inode: self.inode,
            pos: self.pos,
            mode: self.mode,
            generation: self.generation,
        }))
    }
}

struct SimLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
    generation: u64,
}

impl DirLock for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut state = self.state.lock();
        if state.locks.get(&self.path) == Some(&self.generation) {
            state.locks.remove(&self.path);
        }
    }
}

impl Storage for SimStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        let generation = self.generation();
        let mut state = self.state.lock();
        let creates = matches!(mode, OpenMode::CreateNew | OpenMode::Truncate);
        let op = if creates { Op::Create } else { Op::Open };
        state.check(op, path, generation)?;
        let existing = state.files.get(path).copied();
        let inode = match (mode, existing) {
            (OpenMode::CreateNew, Some(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists", path.display()),
                ))
            }
            (OpenMode::Truncate, Some(inode)) => {
                state.inodes.get_mut(&inode).expect("live").data.clear();
                inode
            }
            (OpenMode::CreateNew | OpenMode::Truncate, None) => {
                if !state.parent_exists(path) {
                    return Err(not_found(path));
                }
                state.next_inode += 1;
                let inode = state.next_inode;
                state.inodes.insert(inode, Inode::default());
                state.files.insert(path.to_path_buf(), inode);
                inode
            }
            (_, Some(inode)) => inode,
            (_, None) => return Err(not_found(path)),
        };
        Ok(Box::new(SimFile {
            state: Arc::clone(&self.state),
            path: path.to_path_buf(),
            inode,
            pos: 0,
            mode,
            generation,
        }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let generation = self.generation();
        let mut state = self.state.lock();
        state.check(Op::Mkdir, path, generation)?;
        let new: Vec<PathBuf> = path
            .ancestors()
            .filter(|a| !a.as_os_str().is_empty() && !state.dirs.contains(*a))
            .map(Path::to_path_buf)
            .collect();
        // A tree made from nothing is the data directory the operator
        // provides: durable from the start. A directory made inside an
        // existing one (the quarantine) needs `sync_dir` of its parent.
        let fresh = path.ancestors().all(|a| !state.dirs.contains(a));
        for dir in new {
            if fresh {
                state.durable_dirs.insert(dir.clone());
            }
            state.dirs.insert(dir);
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let generation = self.generation();
        let mut state = self.state.lock();
        state.check(Op::List, dir, generation)?;
        if !state.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let name_in_dir = |path: &Path| -> Option<String> {
            (path.parent() == Some(dir))
                .then(|| path.file_name()?.to_str().map(str::to_string))
                .flatten()
        };
        let files = state
            .files
            .keys()
            .filter_map(|p| name_in_dir(p))
            .map(|name| DirEntry {
                name,
                is_file: true,
            });
        let dirs = state
            .dirs
            .iter()
            .filter_map(|p| name_in_dir(p))
            .map(|name| DirEntry {
                name,
                is_file: false,
            });
        Ok(files.chain(dirs).collect())
    }

    fn exists(&self, path: &Path) -> bool {
        let state = self.state.lock();
        state.files.contains_key(path) || state.dirs.contains(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let generation = self.generation();
        let mut state = self.state.lock();
        state.check(Op::Remove, path, generation)?;
        // The inode lives on: open handles and the durable view may still
        // refer to it (a power loss drops what nothing refers to).
        state.files.remove(path).ok_or_else(|| not_found(path))?;
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let generation = self.generation();
        let mut state = self.state.lock();
        state.check(Op::Rename, from, generation)?;
        if !state.parent_exists(to) {
            return Err(not_found(to));
        }
        let inode = state.files.remove(from).ok_or_else(|| not_found(from))?;
        state.files.insert(to.to_path_buf(), inode);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let generation = self.generation();
        let mut state = self.state.lock();
        state.check(Op::SyncDir, dir, generation)?;
        let in_dir = |path: &Path| path.parent() == Some(dir);
        state.durable_files.retain(|path, _| !in_dir(path));
        let now: Vec<(PathBuf, u64)> = state
            .files
            .iter()
            .filter(|(path, _)| in_dir(path))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        state.durable_files.extend(now);
        state.durable_dirs.retain(|path| !in_dir(path));
        let dirs: Vec<PathBuf> = state.dirs.iter().filter(|p| in_dir(p)).cloned().collect();
        state.durable_dirs.extend(dirs);
        Ok(())
    }

    fn lock(&self, path: &Path, _note: &str) -> io::Result<Box<dyn DirLock>> {
        let generation = self.generation();
        let mut state = self.state.lock();
        if state.locks.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "locked by another process",
            ));
        }
        state.locks.insert(path.to_path_buf(), generation);
        Ok(Box::new(SimLock {
            state: Arc::clone(&self.state),
            path: path.to_path_buf(),
            generation,
        }))
    }
}
