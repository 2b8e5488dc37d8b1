//! The seam between the log and the filesystem.
//!
//! Every file operation of the WAL and of the queue manifest goes through
//! [`Storage`], so that tests can swap the real filesystem ([`OsStorage`])
//! for one that fails on purpose or loses power ([`super::sim::SimStorage`]),
//! as SQLite's test VFS does. The trait is the small set of operations an
//! append-only log needs, with POSIX meaning: a handle keeps working after
//! its file is renamed or unlinked, data is durable after `sync_data`, and a
//! directory entry (create, rename, unlink) after `sync_dir` of its parent.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::Path;

/// An open file.
pub trait StorageFile: Read + Write + Seek + Send + Sync {
    /// Makes the file's data durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Makes the file's data and metadata durable (`fsync`).
    fn sync_all(&self) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file's size in bytes.
    fn size(&self) -> io::Result<u64>;
    /// A second handle to the same file (for fsyncs on another thread).
    fn try_clone(&self) -> io::Result<Box<dyn StorageFile>>;
}

/// How a file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Writes go to the end; the file must exist.
    Append,
    /// Writes go to the end; the file must not exist yet.
    CreateNew,
    /// Read and write at any position; the file must exist.
    ReadWrite,
    /// Created, or emptied if it exists; written from the start.
    Truncate,
}

/// A directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub is_file: bool,
}

/// Held while a process owns a directory; dropping it lets go.
pub trait DirLock: Send + Sync {}

/// The file operations the log needs. See the module docs.
pub trait Storage: Send + Sync + 'static {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>>;
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The entries of `dir` (names that are not UTF-8 are left out).
    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>>;
    fn exists(&self, path: &Path) -> bool;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the creations, renames and deletions in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes the exclusive lock on `dir` (through the file `path` in it),
    /// or fails with `WouldBlock` when another process holds it. `note` is
    /// written into the file, for whoever finds it locked.
    fn lock(&self, path: &Path, note: &str) -> io::Result<Box<dyn DirLock>>;
}

/// The real filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsStorage;

struct OsFile(File);

impl Read for OsFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for OsFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl Seek for OsFile {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.0.seek(pos)
    }
}

impl StorageFile for OsFile {
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn try_clone(&self) -> io::Result<Box<dyn StorageFile>> {
        Ok(Box::new(OsFile(self.0.try_clone()?)))
    }
}

/// An advisory `flock` on the lock file, released when the file closes
/// (also when the process dies, so a kill -9 leaves nothing to clean up).
struct OsDirLock {
    _file: File,
}

impl DirLock for OsDirLock {}

impl Storage for OsStorage {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn StorageFile>> {
        let mut options = OpenOptions::new();
        match mode {
            OpenMode::Read => options.read(true),
            OpenMode::Append => options.append(true),
            OpenMode::CreateNew => options.append(true).create_new(true),
            OpenMode::ReadWrite => options.read(true).write(true),
            OpenMode::Truncate => options.write(true).create(true).truncate(true),
        };
        Ok(Box::new(OsFile(options.open(path)?)))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let mut entries = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            entries.push(DirEntry {
                name,
                is_file: entry.file_type()?.is_file(),
            });
        }
        Ok(entries)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        #[cfg(unix)]
        {
            File::open(dir)?.sync_all()
        }
        #[cfg(not(unix))]
        {
            let _ = dir;
            Ok(())
        }
    }

    fn lock(&self, path: &Path, note: &str) -> io::Result<Box<dyn DirLock>> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if let Err(error) = try_lock_exclusive(&file) {
            if error.kind() != io::ErrorKind::WouldBlock {
                return Err(error);
            }
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("locked by {}", holder.trim()),
            ));
        }
        // Who holds it, for the error message of the next one to try.
        file.set_len(0)?;
        file.write_all(note.as_bytes())?;
        Ok(Box::new(OsDirLock { _file: file }))
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: fails with `WouldBlock` when another open
/// file description holds it.
#[cfg(unix)]
fn try_lock_exclusive(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock only reads the descriptor, which `file` keeps open.
    let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(unix))]
fn try_lock_exclusive(_file: &File) -> io::Result<()> {
    Ok(())
}
