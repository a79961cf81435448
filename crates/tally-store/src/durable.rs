//! Making sled's writes really durable.
//!
//! sled 0.34 `flush()` writes its log buffers with `pwrite` and then calls `sync_file_range`,
//! which pushes data pages to the device but neither the file's metadata (its size, when the
//! log grew) nor the disk's write cache. It also writes values too large for a log segment
//! (> 128 KiB with the default 512 KiB segments, which a big batch entry can reach) to
//! separate files in `blobs/`, without any sync. So after `flush()` we `fdatasync` the `db`
//! file ourselves, `fdatasync` every blob file we have not synced yet, and `fsync` the
//! `blobs/` directory when it gained files. Only then may a write be reported durable.
//!
//! Why sled and not a hand-rolled append-only log file: one store, one recovery path (sled's
//! own CRC-checked log replay), atomic batches across keys (purge, state-machine batches),
//! and one `fdatasync` of one file per append in the common case, the same cost as a
//! dedicated log file. sled's log is sequential, so making a later write durable also makes
//! every earlier write durable (vote, committed, truncations, state-machine batches).

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::StoreError;

pub(crate) struct DiskSync {
    db_file_path: PathBuf,
    db_file: File,
    blobs_dir: PathBuf,
    /// Blob files already fsynced. sled never rewrites a blob file in place (it creates a new
    /// one per write), so a file synced once stays synced.
    synced_blobs: Mutex<HashSet<OsString>>,
}

impl DiskSync {
    /// `sled_dir` is the directory sled was opened on; sled has already created `db` and
    /// `blobs/` in it.
    pub(crate) fn new(sled_dir: &Path) -> Result<Self, StoreError> {
        let db_file_path = sled_dir.join("db");
        let db_file =
            File::open(&db_file_path).map_err(|e| StoreError::io("open", &db_file_path, e))?;
        let this = DiskSync {
            db_file_path,
            db_file,
            blobs_dir: sled_dir.join("blobs"),
            synced_blobs: Mutex::new(HashSet::new()),
        };
        // The files sled created on a fresh open must themselves survive a crash.
        sync_dir(sled_dir)?;
        if let Some(parent) = sled_dir.parent() {
            sync_dir(parent)?;
        }
        Ok(this)
    }

    /// Flushes sled and fsyncs what it wrote. Blocking: call from a blocking thread.
    pub(crate) fn sync(&self, db: &sled::Db) -> Result<(), StoreError> {
        db.flush().map_err(StoreError::sled("flush"))?;
        self.db_file
            .sync_data()
            .map_err(|e| StoreError::io("fdatasync", &self.db_file_path, e))?;
        self.sync_new_blobs()
    }

    fn sync_new_blobs(&self) -> Result<(), StoreError> {
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|p| p.into_inner());
        let entries = std::fs::read_dir(&self.blobs_dir)
            .map_err(|e| StoreError::io("read dir", &self.blobs_dir, e))?;
        let mut present = HashSet::new();
        let mut new_files = false;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io("read dir", &self.blobs_dir, e))?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                let path = entry.path();
                match File::open(&path) {
                    Ok(f) => f
                        .sync_data()
                        .map_err(|e| StoreError::io("fdatasync", &path, e))?,
                    // sled garbage-collected it between the listing and now: nothing to sync.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(StoreError::io("open", &path, e)),
                }
                new_files = true;
            }
            present.insert(name);
        }
        if new_files {
            sync_dir(&self.blobs_dir)?;
        }
        // Forget blobs sled has removed, so the set does not grow forever.
        *synced = present;
        Ok(())
    }
}

/// Replaces `dir/name` with `bytes` so that a crash leaves the old content or the new, never
/// a part: written to `name.tmp`, fsynced, renamed over, the directory fsynced.
pub(crate) fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    use std::io::Write;
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp).map_err(|e| StoreError::io("create", &tmp, e))?;
    file.write_all(bytes)
        .map_err(|e| StoreError::io("write", &tmp, e))?;
    file.sync_all()
        .map_err(|e| StoreError::io("fsync", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| StoreError::io("rename", &path, e))?;
    sync_dir(dir)
}

/// fsyncs a directory, so that the files created or renamed in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("fsync dir", dir, e))
}

/// Creates `dir` and its missing parents so that they survive a crash: each directory created
/// is synced in its parent (a new directory's entry is the parent's data, which an fsync of
/// the files inside does not cover).
pub(crate) fn create_dir_durable(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(path) = at {
        if path.as_os_str().is_empty() || path.exists() {
            break;
        }
        missing.push(path);
        at = path.parent();
    }
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io("create dir", dir, e))?;
    // Outermost first: a parent's entry is on disk before its children are named in it.
    for path in missing.iter().rev() {
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        sync_dir(parent)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_directory_and_its_missing_parents_are_created() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b/c");
        create_dir_durable(&dir).unwrap();
        assert!(dir.is_dir());
        // Again: nothing to do.
        create_dir_durable(&dir).unwrap();
        // A file where a directory should be is an error naming the path.
        let file = root.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let error = create_dir_durable(&file.join("d")).unwrap_err();
        assert!(error.to_string().contains("create dir"), "{error}");
    }
}
