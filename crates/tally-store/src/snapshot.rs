//! Snapshot files: the format openraft ships between nodes and the one file kept on disk.
//!
//! Format (all integers big-endian):
//! `b"TALLYSNP"`, format version (u8), header length (u32), header (versioned bincode of the
//! `SnapshotMeta`: last applied log id, membership, snapshot id), state length (u64), the
//! state (`LedgerState::encode_snapshot()`), history length (u64), the history rows (see
//! [`encode_rows`]), then SHA-256 of everything before it. The file kept on disk carries one
//! history row, the account heads; the form sent to followers (`get_current_snapshot` in
//! `state_machine.rs`) also carries every journal block and ledger-event row, so a node that
//! catches up by snapshot serves the same `History` and event stream as the nodes that applied
//! every entry (found by the fault suite: without it, a node that joined by snapshot had a
//! hole in its history). A snapshot received is checked end to end before it replaces
//! anything.
//!
//! On disk there is one file, `snapshots/current.snap`, replaced atomically: write a temp file
//! (`current.snap.build` for a build, `current.snap.tmp` for an install), fsync it, rename over
//! `current.snap`, fsync the directory. Snapshots on their way to or from another node are
//! files too (unlinked as soon as they are created), and every reader here streams: no
//! snapshot is ever held in memory whole.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use openraft::{BasicNode, SnapshotMeta};
use sha2::{Digest, Sha256};

use crate::codec;
use crate::durable::sync_dir;
use crate::error::StoreError;
use crate::types::NodeId;

pub(crate) type Meta = SnapshotMeta<NodeId, BasicNode>;

const MAGIC: &[u8; 8] = b"TALLYSNP";
const SNAPSHOT_VERSION: u8 = 2;
const HASH_LEN: usize = 32;
const CURRENT: &str = "current.snap";
/// Where an installed snapshot's local form is written before it is made current.
pub(crate) const INSTALL_TEMP: &str = "current.snap.tmp";
/// Where a build writes before it is made current (apart from [`TEMP`], which installs use).
pub(crate) const BUILD_TEMP: &str = "current.snap.build";
/// Snapshots on their way to or from another node: unlinked right after they are created,
/// so they vanish with their last handle (a crash in between leaves one, removed on open).
const TRANSFER_SUFFIX: &str = ".transfer";

#[cfg(test)]
pub(crate) fn encode(meta: &Meta, state: &[u8], history: &[u8]) -> Result<Vec<u8>, StoreError> {
    let mut out = prefix(meta)?;
    out.reserve_exact(8 + state.len() + 8 + history.len() + HASH_LEN);
    out.extend_from_slice(&(state.len() as u64).to_be_bytes());
    out.extend_from_slice(state);
    out.extend_from_slice(&(history.len() as u64).to_be_bytes());
    out.extend_from_slice(history);
    let hash = Sha256::digest(&out);
    out.extend_from_slice(&hash);
    Ok(out)
}

/// One stored row: key and value bytes.
pub(crate) type Row = (Vec<u8>, Vec<u8>);

/// Encodes history rows as `count (u64)`, then per row `key length (u32), key, value length
/// (u32), value`, big-endian. Written by hand rather than with the value codec because it must
/// never fail: the history has no size limit of its own, and a failed snapshot build stops the
/// Raft core.
pub(crate) fn encode_rows(rows: &[Row]) -> Vec<u8> {
    let total: usize = rows.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(8 + total);
    out.extend_from_slice(&(rows.len() as u64).to_be_bytes());
    for (key, value) in rows {
        out.extend_from_slice(&(key.len() as u32).to_be_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value);
    }
    out
}

/// A snapshot written to a file as it is read from elsewhere, byte for byte what [`encode`]
/// makes of the same meta, state and [`encode_rows`] of the same rows: the form sent to a
/// follower (the state and the whole history) is never in memory. First [`Assembly::state`],
/// then the rows, then [`Assembly::finish`].
pub(crate) struct Assembly {
    out: BufWriter<File>,
    /// Where the state's length goes.
    state_at: u64,
    state_len: u64,
    rows: u64,
    written: u64,
}

impl Assembly {
    pub(crate) fn new(file: File, meta: &Meta) -> std::io::Result<Self> {
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let prefix = prefix(meta).map_err(std::io::Error::other)?;
        out.write_all(&prefix)?;
        out.write_all(&[0; 8])?;
        Ok(Assembly {
            out,
            state_at: prefix.len() as u64,
            state_len: 0,
            rows: 0,
            written: prefix.len() as u64 + 8,
        })
    }

    /// Copies the state (all that `state` reads) into place.
    pub(crate) fn state(&mut self, state: &mut dyn Read) -> std::io::Result<()> {
        self.state_len = std::io::copy(state, &mut self.out)?;
        // The history's length and row count, written over in `finish`.
        self.out.write_all(&[0; 16])?;
        self.written += self.state_len + 16;
        Ok(())
    }

    pub(crate) fn row(&mut self, key: &[u8], value: &[u8]) -> std::io::Result<()> {
        for part in [key, value] {
            self.out.write_all(&(part.len() as u32).to_be_bytes())?;
            self.out.write_all(part)?;
            self.written += 4 + part.len() as u64;
        }
        self.rows += 1;
        Ok(())
    }

    /// Patches the lengths and the row count, appends the SHA-256 (reading the file back) and
    /// answers the file, positioned at its start.
    pub(crate) fn finish(self) -> std::io::Result<File> {
        use std::os::unix::fs::FileExt;
        let mut file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.write_all_at(&self.state_len.to_be_bytes(), self.state_at)?;
        let history_at = self.state_at + 8 + self.state_len;
        let history_len = self.written - history_at - 8;
        let mut lengths = [0u8; 16];
        lengths[..8].copy_from_slice(&history_len.to_be_bytes());
        lengths[8..].copy_from_slice(&self.rows.to_be_bytes());
        file.write_all_at(&lengths, history_at)?;
        file.rewind()?;
        let mut hasher = Sha256::new();
        std::io::copy(&mut (&mut file).take(self.written), &mut hasher)?;
        file.write_all_at(&hasher.finalize(), self.written)?;
        file.rewind()?;
        Ok(file)
    }
}

/// What a snapshot starts with: magic, format version, header length and header (`meta`).
fn prefix(meta: &Meta) -> Result<Vec<u8>, StoreError> {
    let header = codec::encode("snapshot header", meta)?;
    let header_len = u32::try_from(header.len()).map_err(|_| StoreError::Encode {
        what: "snapshot header",
        reason: format!("{} bytes is over the u32 length field", header.len()),
    })?;
    let mut out = Vec::with_capacity(MAGIC.len() + 1 + 4 + header.len());
    out.extend_from_slice(MAGIC);
    out.push(SNAPSHOT_VERSION);
    out.extend_from_slice(&header_len.to_be_bytes());
    out.extend_from_slice(&header);
    Ok(out)
}

/// Decodes [`encode_rows`], refusing anything that does not add up exactly.
pub(crate) fn decode_rows(mut bytes: &[u8]) -> Result<Vec<Row>, StoreError> {
    let mut rows = Vec::new();
    read_rows(&mut bytes, |key, value| {
        rows.push((key, value));
        Ok(())
    })?;
    Ok(rows)
}

/// What to do about a damaged snapshot file, said with the error.
const SNAPSHOT_DAMAGED_ADVICE: &str = "; a node whose own snapshot (snapshots/current.snap) is \
     damaged cannot start on its data directory: see README, Recovery (remove it, then add it \
     again on an empty one)";

fn corrupt(reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        what: "snapshot",
        reason: reason.into(),
    }
}

/// Magic, format version and header length: the fixed start of every snapshot.
const FIXED: usize = MAGIC.len() + 1 + 4;

/// Checks the magic and the format version; answers the header's length.
fn check_fixed(fixed: &[u8; FIXED]) -> Result<usize, StoreError> {
    if &fixed[..MAGIC.len()] != MAGIC {
        return Err(corrupt("does not start with the Tally snapshot magic"));
    }
    let version = fixed[MAGIC.len()];
    if version != SNAPSHOT_VERSION {
        return Err(StoreError::UnknownVersion {
            what: "snapshot",
            version,
            supported: SNAPSHOT_VERSION,
        });
    }
    Ok(u32::from_be_bytes(fixed[MAGIC.len() + 1..].try_into().expect("4 bytes")) as usize)
}

/// A snapshot file's meta, decoded state and history, read without holding the file in
/// memory (at a million accounts it is some 450 MB, as much again as the state it decodes to;
/// one sent to a follower also carries the whole history): one pass checks the SHA-256 of
/// the whole file, a second decodes it, the state through `decode_state` and the history
/// rows through `read_history` (see [`read_rows`]), each of which must read its part to the
/// end. `path` names the file in errors. Blocking.
pub(crate) fn read_file<T, H>(
    mut file: File,
    path: &Path,
    decode_state: impl FnOnce(&Meta, &mut dyn Read) -> Result<T, StoreError>,
    read_history: impl FnOnce(&mut dyn Read) -> Result<H, StoreError>,
) -> Result<(Meta, T, H), StoreError> {
    let io = |e| StoreError::io("read", path, e);
    let len = file.metadata().map_err(io)?.len();
    if len < (FIXED + 8 + HASH_LEN) as u64 {
        return Err(corrupt(format!(
            "{}: {len} bytes is too short{SNAPSHOT_DAMAGED_ADVICE}",
            path.display()
        )));
    }
    let body_len = len - HASH_LEN as u64;
    let mut hasher = Sha256::new();
    std::io::copy(&mut (&mut file).take(body_len), &mut hasher).map_err(io)?;
    let mut hash = [0u8; HASH_LEN];
    file.read_exact(&mut hash).map_err(io)?;
    if hasher.finalize().as_slice() != hash {
        return Err(corrupt(format!(
            "{}: SHA-256 mismatch (truncated or damaged){SNAPSHOT_DAMAGED_ADVICE}",
            path.display()
        )));
    }

    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut body = BufReader::with_capacity(1 << 20, file.take(body_len));
    let mut fixed = [0u8; FIXED];
    body.read_exact(&mut fixed).map_err(io)?;
    let header_len = check_fixed(&fixed)?;
    let mut rest = body_len - FIXED as u64;
    if header_len as u64 + 8 > rest {
        return Err(corrupt(format!(
            "header length {header_len} runs past the end"
        )));
    }
    let mut header = vec![0u8; header_len];
    body.read_exact(&mut header).map_err(io)?;
    let meta: Meta = codec::decode("snapshot header", &header)?;
    let mut length = [0u8; 8];
    body.read_exact(&mut length).map_err(io)?;
    let state_len = u64::from_be_bytes(length);
    rest -= header_len as u64 + 8;
    if state_len.checked_add(8).is_none_or(|needed| needed > rest) {
        return Err(corrupt(format!(
            "state length {state_len} runs past the end"
        )));
    }
    let mut state_bytes = (&mut body).take(state_len);
    let state = decode_state(&meta, &mut state_bytes)?;
    if state_bytes.limit() != 0 {
        return Err(corrupt(format!(
            "the state ends {} bytes before its length says",
            state_bytes.limit()
        )));
    }
    body.read_exact(&mut length).map_err(io)?;
    let history_len = u64::from_be_bytes(length);
    rest -= state_len + 8;
    if history_len != rest {
        return Err(corrupt(format!(
            "history length field says {history_len} bytes, {rest} present"
        )));
    }
    let mut history_bytes = (&mut body).take(history_len);
    let history = read_history(&mut history_bytes)?;
    if history_bytes.limit() != 0 {
        return Err(corrupt("the history rows end before their length says"));
    }
    Ok((meta, state, history))
}

/// A `read_history` for [`read_file`]: the history's bytes as they are (`path` names the file
/// in errors).
pub(crate) fn history_bytes(
    path: &Path,
) -> impl FnOnce(&mut dyn Read) -> Result<Vec<u8>, StoreError> + '_ {
    move |history| {
        let mut bytes = Vec::new();
        history
            .read_to_end(&mut bytes)
            .map_err(|e| StoreError::io("read", path, e))?;
        Ok(bytes)
    }
}

/// Reads [`encode_rows`] row by row, handing each to `each`; refuses anything that does not
/// add up exactly (the reader must end with the last row).
pub(crate) fn read_rows(
    reader: &mut dyn Read,
    mut each: impl FnMut(Vec<u8>, Vec<u8>) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    fn take(reader: &mut dyn Read, n: usize) -> Result<Vec<u8>, StoreError> {
        let mut bytes = Vec::new();
        reader
            .take(n as u64)
            .read_to_end(&mut bytes)
            .map_err(|e| corrupt(format!("history rows unreadable: {e}")))?;
        if bytes.len() < n {
            return Err(corrupt("history rows are truncated"));
        }
        Ok(bytes)
    }
    let length = |reader: &mut dyn Read| -> Result<usize, StoreError> {
        Ok(u32::from_be_bytes(take(reader, 4)?.try_into().expect("4 bytes")) as usize)
    };
    let count = u64::from_be_bytes(take(reader, 8)?.try_into().expect("8 bytes"));
    for _ in 0..count {
        let key_len = length(reader)?;
        let key = take(reader, key_len)?;
        let value_len = length(reader)?;
        let value = take(reader, value_len)?;
        each(key, value)?;
    }
    let mut after = Vec::new();
    reader
        .read_to_end(&mut after)
        .map_err(|e| corrupt(format!("history rows unreadable: {e}")))?;
    if !after.is_empty() {
        return Err(corrupt(format!(
            "{} bytes after the history rows",
            after.len()
        )));
    }
    Ok(())
}

/// The snapshot directory. The mutex serializes writers (a build finishing while a received
/// snapshot is installed) and remembers what `current.snap` holds.
pub(crate) struct SnapshotFiles {
    dir: PathBuf,
    current: Mutex<Option<Meta>>,
}

impl SnapshotFiles {
    /// Opens the directory; returns the current snapshot, if any, read by [`read_file`]
    /// (`decode_state` decodes its state).
    #[allow(clippy::type_complexity)]
    pub(crate) fn open<T>(
        dir: &Path,
        decode_state: impl FnOnce(&mut dyn Read) -> Result<T, StoreError>,
    ) -> Result<(Self, Option<(Meta, T, Vec<u8>)>), StoreError> {
        crate::durable::create_dir_durable(dir)?;
        // A temp file is a write that crashed before its rename: never the current snapshot.
        for name in [INSTALL_TEMP, BUILD_TEMP] {
            let temp = dir.join(name);
            if temp.exists() {
                fs::remove_file(&temp).map_err(|e| StoreError::io("remove", &temp, e))?;
            }
        }
        let listing = fs::read_dir(dir).map_err(|e| StoreError::io("read dir", dir, e))?;
        for entry in listing {
            let path = entry
                .map_err(|e| StoreError::io("read dir", dir, e))?
                .path();
            if path.to_string_lossy().ends_with(TRANSFER_SUFFIX) {
                fs::remove_file(&path).map_err(|e| StoreError::io("remove", &path, e))?;
            }
        }
        let path = dir.join(CURRENT);
        let current = if path.exists() {
            let file = File::open(&path).map_err(|e| StoreError::io("open", &path, e))?;
            Some(read_file(
                file,
                &path,
                |_, state| decode_state(state),
                history_bytes(&path),
            )?)
        } else {
            None
        };
        let files = SnapshotFiles {
            dir: dir.to_path_buf(),
            current: Mutex::new(current.as_ref().map(|(meta, _, _)| meta.clone())),
        };
        Ok((files, current))
    }

    /// An empty file for a snapshot on its way to or from another node, open for reading and
    /// writing, and already unlinked. Blocking.
    pub(crate) fn transfer_file(&self) -> Result<File, StoreError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self
            .dir
            .join(format!("{}-{n}{TRANSFER_SUFFIX}", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| StoreError::io("create", &path, e))?;
        fs::remove_file(&path).map_err(|e| StoreError::io("remove", &path, e))?;
        Ok(file)
    }

    /// Starts writing a snapshot describing `meta` to the temp file `temp` ([`BUILD_TEMP`] for
    /// a build, [`INSTALL_TEMP`] for an install), in the format of [`encode`]: the state is
    /// written through the returned [`Build`] as it is encoded (no copy of it in memory), then
    /// [`Self::finish_build`] adds the history rows, the state's length and the hash. Blocking.
    pub(crate) fn start_build(&self, meta: &Meta, temp: &str) -> Result<Build, StoreError> {
        let prefix = prefix(meta)?;
        let path = self.dir.join(temp);
        let io = |e| StoreError::io("write", &path, e);
        let file = File::create(&path).map_err(io)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        out.write_all(&prefix).map_err(io)?;
        let state_len_at = prefix.len() as u64;
        // The state's length is not known before it is encoded; written over at the end.
        out.write_all(&0u64.to_be_bytes()).map_err(io)?;
        Ok(Build {
            out,
            path,
            state_len_at,
            state_len: 0,
        })
    }

    /// Completes a build: the history rows, the state's length, and SHA-256 of everything,
    /// computed by reading the file back (so a caller that wrote the state under a lock has
    /// released it by now: the hash is not computed while the state is locked). Not synced;
    /// [`Self::commit_build`] makes it the current snapshot. Blocking.
    pub(crate) fn finish_build(&self, build: Build, history: &[u8]) -> Result<(), StoreError> {
        use std::os::unix::fs::FileExt;
        let Build {
            mut out,
            path,
            state_len_at,
            state_len,
        } = build;
        let io = |e| StoreError::io("write", &path, e);
        out.write_all(&(history.len() as u64).to_be_bytes())
            .map_err(io)?;
        out.write_all(history).map_err(io)?;
        let file = out.into_inner().map_err(|e| io(e.into_error()))?;
        file.write_all_at(&state_len.to_be_bytes(), state_len_at)
            .map_err(io)?;
        let mut hasher = Sha256::new();
        let total = File::open(&path)
            .and_then(|mut reader| std::io::copy(&mut reader, &mut hasher))
            .map_err(|e| StoreError::io("read", &path, e))?;
        file.write_all_at(&hasher.finalize(), total).map_err(io)?;
        Ok(())
    }

    /// [`Self::start_build`], `write_state`, then [`Self::finish_build`], in one call.
    #[cfg(test)]
    pub(crate) fn write_build(
        &self,
        meta: &Meta,
        write_state: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
        history: &[u8],
    ) -> Result<(), StoreError> {
        let mut build = self.start_build(meta, BUILD_TEMP)?;
        write_state(&mut build).map_err(|e| StoreError::io("write", &build.path, e))?;
        self.finish_build(build, history)
    }

    /// Syncs the temp file `temp` (where a full disk shows, with delayed allocation). Blocking.
    pub(crate) fn sync_build(&self, temp: &str) -> Result<(), StoreError> {
        let temp = self.dir.join(temp);
        File::open(&temp)
            .and_then(|f| f.sync_all())
            .map_err(|e| StoreError::io("fsync", &temp, e))
    }

    /// Removes the temp file `temp` of a build that failed, freeing its space (best effort: a
    /// file left is removed at the next open).
    pub(crate) fn discard_build(&self, temp: &str) {
        let temp = self.dir.join(temp);
        if let Err(error) = fs::remove_file(&temp) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %temp.display(), %error, "cannot remove a failed snapshot build");
            }
        }
    }

    /// Makes the temp file `temp`, a finished build describing `meta`, the current snapshot,
    /// durably, unless the current one is newer. Returns whether it was kept. Blocking.
    pub(crate) fn commit_build(&self, meta: &Meta, temp: &str) -> Result<bool, StoreError> {
        let temp = self.dir.join(temp);
        File::open(&temp)
            .and_then(|f| f.sync_all())
            .map_err(|e| StoreError::io("fsync", &temp, e))?;
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cur) = current.as_ref() {
            if cur.last_log_id > meta.last_log_id {
                fs::remove_file(&temp).map_err(|e| StoreError::io("remove", &temp, e))?;
                return Ok(false);
            }
        }
        let path = self.dir.join(CURRENT);
        fs::rename(&temp, &path).map_err(|e| StoreError::io("rename", &temp, e))?;
        sync_dir(&self.dir)?;
        *current = Some(meta.clone());
        Ok(true)
    }

    /// What the current snapshot describes, without reading it.
    pub(crate) fn current_meta(&self) -> Option<Meta> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The current snapshot file, opened (a later commit replaces the name, not what is
    /// open), and its path. Blocking.
    pub(crate) fn open_current(&self) -> Result<Option<(File, PathBuf)>, StoreError> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.is_none() {
            return Ok(None);
        }
        let path = self.dir.join(CURRENT);
        let file = File::open(&path).map_err(|e| StoreError::io("open", &path, e))?;
        Ok(Some((file, path)))
    }

    /// The current snapshot's bytes. Blocking.
    #[cfg(test)]
    pub(crate) fn read_current(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.is_none() {
            return Ok(None);
        }
        let path = self.dir.join(CURRENT);
        let bytes = fs::read(&path).map_err(|e| StoreError::io("read", &path, e))?;
        Ok(Some(bytes))
    }
}

/// A snapshot being written (see [`SnapshotFiles::start_build`]); what is written to it is
/// the state's encoding.
pub(crate) struct Build {
    out: std::io::BufWriter<File>,
    path: PathBuf,
    /// Where the state's length goes.
    state_len_at: u64,
    state_len: u64,
}

impl Write for Build {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.state_len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId, Membership, StoredMembership};
    use std::collections::BTreeSet;

    /// A `decode_state` for [`SnapshotFiles::open`]: the state's bytes as they are.
    fn state_bytes(state: &mut dyn Read) -> Result<Vec<u8>, StoreError> {
        history_bytes(Path::new("state"))(state)
    }

    /// [`read_file`] of `bytes`, written to a file first.
    fn decode(bytes: &[u8]) -> Result<(Meta, Vec<u8>, Vec<u8>), StoreError> {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        file.rewind().unwrap();
        read_file(
            file,
            Path::new("test"),
            |_, state| state_bytes(state),
            state_bytes,
        )
    }

    fn meta(index: u64) -> Meta {
        let log_id = LogId::new(CommittedLeaderId::new(3, 1), index);
        Meta {
            last_log_id: Some(log_id),
            last_membership: StoredMembership::new(
                Some(log_id),
                Membership::new(vec![BTreeSet::from([1, 2, 3])], None),
            ),
            snapshot_id: format!("s-{index}"),
        }
    }

    #[test]
    fn round_trip_and_damage_detected() {
        let bytes = encode(&meta(9), b"state bytes", b"history rows").unwrap();
        let (m, state, history) = decode(&bytes).unwrap();
        assert_eq!(m, meta(9));
        assert_eq!(state, b"state bytes");
        assert_eq!(history, b"history rows");

        for i in [0, 8, 12, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_err(), "flipped byte {i} not detected");
        }
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(b"").is_err());
    }

    #[test]
    fn a_streamed_build_writes_the_same_bytes_and_a_stale_one_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (files, _) = SnapshotFiles::open(dir.path(), state_bytes).unwrap();
        files
            .write_build(&meta(7), |w| w.write_all(b"state bytes"), b"rows")
            .unwrap();
        assert!(files.commit_build(&meta(7), BUILD_TEMP).unwrap());
        assert_eq!(
            files.read_current().unwrap().unwrap(),
            encode(&meta(7), b"state bytes", b"rows").unwrap()
        );
        // Whatever the state's length, it is what the file announces.
        files
            .write_build(&meta(8), |w| w.write_all(&[7; 3_000_000]), b"")
            .unwrap();
        let big = fs::read(dir.path().join(BUILD_TEMP)).unwrap();
        assert_eq!(big, encode(&meta(8), &[7; 3_000_000], b"").unwrap());
        // An older build never replaces a newer snapshot.
        files
            .write_build(&meta(6), |w| w.write_all(b"six"), b"")
            .unwrap();
        assert!(!files.commit_build(&meta(6), BUILD_TEMP).unwrap());
        assert_eq!(
            decode(&files.read_current().unwrap().unwrap()).unwrap().0,
            meta(7)
        );
    }

    #[test]
    fn an_assembly_is_the_encoding_of_the_same_rows() {
        let rows = vec![
            (b"j\0\0\0\0\0\0\0\x01".to_vec(), vec![1, 2, 3]),
            (b"a\0\x04acme".to_vec(), Vec::new()),
        ];
        let assembled = |state: &[u8], rows: &[Row]| {
            let mut assembly = Assembly::new(tempfile::tempfile().unwrap(), &meta(5)).unwrap();
            assembly.state(&mut &state[..]).unwrap();
            for (key, value) in rows {
                assembly.row(key, value).unwrap();
            }
            let mut bytes = Vec::new();
            assembly.finish().unwrap().read_to_end(&mut bytes).unwrap();
            bytes
        };
        assert_eq!(
            assembled(b"state bytes", &rows),
            encode(&meta(5), b"state bytes", &encode_rows(&rows)).unwrap()
        );
        assert_eq!(
            assembled(b"", &[]),
            encode(&meta(5), b"", &encode_rows(&[])).unwrap()
        );
    }

    #[test]
    fn history_rows_round_trip_and_damage_is_refused() {
        let rows = vec![
            (b"j\0\0\0\0\0\0\0\x01".to_vec(), vec![1, 2, 3]),
            (b"a\0\x04acme".to_vec(), Vec::new()),
        ];
        let bytes = encode_rows(&rows);
        assert_eq!(decode_rows(&bytes).unwrap(), rows);
        assert!(decode_rows(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_rows(&longer).is_err());
        assert_eq!(decode_rows(&encode_rows(&[])).unwrap(), Vec::new());
    }

    #[test]
    fn save_keeps_newest_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (files, none) = SnapshotFiles::open(dir.path(), state_bytes).unwrap();
        assert!(none.is_none());
        files
            .write_build(&meta(10), |w| w.write_all(b"ten"), b"")
            .unwrap();
        assert!(files.commit_build(&meta(10), BUILD_TEMP).unwrap());
        files
            .write_build(&meta(5), |w| w.write_all(b"five"), b"")
            .unwrap();
        assert!(!files.commit_build(&meta(5), BUILD_TEMP).unwrap());
        drop(files);
        let (files, current) = SnapshotFiles::open(dir.path(), state_bytes).unwrap();
        let (m, state, history) = current.unwrap();
        assert_eq!(
            (m, &state[..], &history[..]),
            (meta(10), &b"ten"[..], &b""[..])
        );
        assert_eq!(
            files.read_current().unwrap().unwrap(),
            encode(&meta(10), b"ten", b"").unwrap()
        );
    }

    /// [`read_file`] of the file at `path`, its history rows as they are.
    fn read<T>(
        path: &Path,
        decode_state: impl FnOnce(&mut dyn Read) -> Result<T, StoreError>,
    ) -> Result<(Meta, T, Vec<u8>), StoreError> {
        read_file(
            File::open(path).unwrap(),
            path,
            |_, state| decode_state(state),
            state_bytes,
        )
    }

    #[test]
    fn a_file_read_in_two_passes_is_checked_like_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CURRENT);
        let bytes = encode(&meta(4), &[9; 200_000], b"history rows").unwrap();
        fs::write(&path, &bytes).unwrap();
        let (m, state, history) = read(&path, state_bytes).unwrap();
        assert_eq!(m, meta(4));
        assert_eq!(state, vec![9; 200_000]);
        assert_eq!(history, b"history rows");

        // Damage anywhere, or a short file, is refused before any state is decoded.
        for i in [0, 8, 12, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            fs::write(&path, &bad).unwrap();
            let decoded = std::cell::Cell::new(false);
            let result = read(&path, |state| {
                decoded.set(true);
                state_bytes(state)
            });
            assert!(result.is_err(), "flipped byte {i} not detected");
            assert!(!decoded.get(), "flipped byte {i}: state decoded anyway");
        }
        fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(read(&path, state_bytes).is_err());

        // A state decoder that stops short of the state's length is a corrupt snapshot.
        fs::write(&path, &bytes).unwrap();
        let error = read(&path, |state| {
            let mut first = [0u8; 10];
            state
                .read_exact(&mut first)
                .map_err(|e| StoreError::io("read", Path::new("state"), e))?;
            Ok(first)
        })
        .unwrap_err();
        assert!(error.to_string().contains("199990 bytes before"), "{error}");
    }
}
