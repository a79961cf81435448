//! The bytes of the journal blocks, in one append-only file; sled keeps only where each block
//! is (12 bytes per block instead of the block).
//!
//! Why: sled 0.34 rewrites its pages as they fill, so a journal block of ~4 KiB stored in it
//! was written several times over: at 16 x 100 a follower's sled wrote ~400 bytes per settled
//! event for a journal entry of ~110, three times the bytes of the Raft log, and copying them
//! into the page cache was 12% of its samples (scripts/bench/README.md, session 10). Here a
//! block is written once.
//!
//! A record: `len: u32 LE`, `crc32: u32 LE` (of the payload), the payload (an encoded block,
//! see `state_machine::encode_block`). A block's location is the offset of its record and the
//! payload's length; reading checks both the header and the CRC.
//!
//! Durability is the journal rows' (state_machine module docs): nothing is synced per
//! append; a snapshot build syncs this file BEFORE sled, so a location that is durable names
//! bytes that are. After a crash, the entries after the last snapshot are applied again; a
//! block whose row is there and whose bytes read back the same is kept, any other is appended
//! again (its row then points at the new copy). What no row names (a torn record at the end,
//! a copy whose row was lost) stays as unreferenced space: at most the journal of the entries
//! applied since the last snapshot, and only after a crash.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::durable::sync_dir;
use crate::error::StoreError;
use crate::page_cache::Trim;

/// Bytes of a record's header.
const HEADER_BYTES: u64 = 8;

/// Records laid out as the journal file stores them (a header, then the payload), built in
/// place: a caller encodes each payload straight after [`Records::begin`], and
/// [`JournalFile::append_records`] writes the bytes as they are, without copying them into
/// another buffer first.
#[derive(Default)]
pub(crate) struct Records {
    pub(crate) bytes: Vec<u8>,
    /// Where each record ends in `bytes` (it starts where the one before it ends).
    ends: Vec<usize>,
}

impl Records {
    /// Empties it, keeping its memory (up to 64 MiB: an unusually large apply's is let go).
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        if self.bytes.capacity() > 64 * 1024 * 1024 {
            self.bytes = Vec::new();
        }
    }

    /// Starts a record: its header, filled in by [`Self::finish`]; the payload follows.
    pub(crate) fn begin(&mut self) {
        self.bytes.extend_from_slice(&[0; HEADER_BYTES as usize]);
    }

    /// Ends the record begun last (its payload is everything written since) and fills in its
    /// header; answers the payload's length.
    pub(crate) fn finish(&mut self) -> Result<usize, StoreError> {
        let at = self.ends.last().copied().unwrap_or(0);
        let payload = &self.bytes[at + HEADER_BYTES as usize..];
        let len = u32::try_from(payload.len()).map_err(|_| StoreError::Encode {
            what: "journal block",
            reason: format!("{} bytes; at most 4 GiB", payload.len()),
        })?;
        let crc = crc32fast::hash(payload);
        self.bytes[at..at + 4].copy_from_slice(&len.to_le_bytes());
        self.bytes[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        self.ends.push(self.bytes.len());
        Ok(len as usize)
    }

    fn starts(&self) -> impl Iterator<Item = usize> + '_ {
        std::iter::once(0).chain(self.ends.iter().copied())
    }

    /// Each record's payload, in order.
    pub(crate) fn payloads(&self) -> impl Iterator<Item = &[u8]> {
        self.ends
            .iter()
            .zip(self.starts())
            .map(|(&end, at)| &self.bytes[at + HEADER_BYTES as usize..end])
    }
}

/// Where one block is: what sled keeps for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Location {
    /// Offset of the record (its header) in the file.
    pub(crate) offset: u64,
    /// Bytes of the payload.
    pub(crate) len: u32,
}

impl Location {
    /// `offset: u64 BE`, `len: u32 BE`.
    pub(crate) fn to_bytes(self) -> [u8; 12] {
        let mut out = [0u8; 12];
        out[..8].copy_from_slice(&self.offset.to_be_bytes());
        out[8..].copy_from_slice(&self.len.to_be_bytes());
        out
    }

    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Location, StoreError> {
        if bytes.len() != 12 {
            return Err(StoreError::Corrupt {
                what: "journal block location",
                reason: format!("{} bytes, expected 12", bytes.len()),
            });
        }
        Ok(Location {
            offset: u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")),
            len: u32::from_be_bytes(bytes[8..].try_into().expect("4 bytes")),
        })
    }
}

pub(crate) struct JournalFile {
    path: PathBuf,
    file: File,
    tail: Mutex<Tail>,
}

struct Tail {
    /// Where the next record goes: the file's length when opened, then grown by each append.
    end: u64,
    /// How far the older pages were advised out of the page cache (see `page_cache`).
    trim: Trim,
}

impl JournalFile {
    /// Opens (or creates, durably) the file at `path`.
    pub(crate) fn open(path: &Path) -> Result<JournalFile, StoreError> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| StoreError::io("open", path, e))?;
        if !existed {
            if let Some(dir) = path.parent() {
                sync_dir(dir)?;
            }
        }
        let end = file
            .metadata()
            .map_err(|e| StoreError::io("stat", path, e))?
            .len();
        Ok(JournalFile {
            path: path.to_path_buf(),
            file,
            tail: Mutex::new(Tail {
                end,
                trim: Trim::new(0),
            }),
        })
    }

    /// Appends `blocks` with one write and returns their locations, in order. Not synced.
    pub(crate) fn append<B: AsRef<[u8]>>(&self, blocks: &[B]) -> Result<Vec<Location>, StoreError> {
        let mut records = Records::default();
        for block in blocks {
            records.begin();
            records.bytes.extend_from_slice(block.as_ref());
            records.finish()?;
        }
        self.append_records(&records)
    }

    /// Appends `records` as they are laid out, with one write, and returns their locations,
    /// in order. Not synced.
    pub(crate) fn append_records(&self, records: &Records) -> Result<Vec<Location>, StoreError> {
        let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        let start = tail.end;
        // On an error, whatever part landed lies past `end` and is written over by the next
        // append: no location names it.
        self.file
            .write_all_at(&records.bytes, start)
            .map_err(|e| StoreError::io("write", &self.path, e))?;
        tail.end = start + records.bytes.len() as u64;
        Ok(records
            .ends
            .iter()
            .zip(records.starts())
            .map(|(&end, at)| Location {
                offset: start + at as u64,
                len: (end - at - HEADER_BYTES as usize) as u32,
            })
            .collect())
    }

    /// Advises the older pages out of the page cache as the file grows (see `page_cache`).
    /// Apart from [`Self::append`] so that the caller can do it after releasing the state's
    /// write lock: the first advice of a range starts its write-back.
    pub(crate) fn trim_cache(&self) {
        let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        let end = tail.end;
        tail.trim.after_append(&self.file, end);
    }

    /// The payload at `location`, checked against its record's header and CRC.
    pub(crate) fn read(&self, location: Location) -> Result<Vec<u8>, StoreError> {
        let mut record = vec![0u8; HEADER_BYTES as usize + location.len as usize];
        self.file
            .read_exact_at(&mut record, location.offset)
            .map_err(|e| StoreError::io("read", &self.path, e))?;
        let len = u32::from_le_bytes(record[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(record[4..8].try_into().expect("4 bytes"));
        let payload = record.split_off(HEADER_BYTES as usize);
        let crc_matches = crc32fast::hash(&payload) == crc;
        if len != location.len || !crc_matches {
            return Err(StoreError::Corrupt {
                what: "journal file",
                reason: format!(
                    "the record at offset {} of {} does not hold the {} bytes its location names \
                     (header length {len}, CRC {})",
                    location.offset,
                    self.path.display(),
                    location.len,
                    if crc_matches {
                        "matches"
                    } else {
                        "does not match"
                    }
                ),
            });
        }
        Ok(payload)
    }

    /// The payload a location row (what [`Location::to_bytes`] gave) names.
    pub(crate) fn read_located(&self, row: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.read(Location::from_bytes(row)?)
    }

    /// `fdatasync`: every block appended so far is on disk. Blocking.
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        self.file
            .sync_data()
            .map_err(|e| StoreError::io("fdatasync", &self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_read_back_after_reopening_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.dat");
        let journal = JournalFile::open(&path).unwrap();
        let first = journal.append(&[b"alpha".to_vec(), Vec::new()]).unwrap();
        let second = journal.append(&[vec![7u8; 5000]]).unwrap();
        assert_eq!(first[0].offset, 0);
        assert_eq!(first[1].offset, 8 + 5);
        assert_eq!(second[0].offset, 8 + 5 + 8);
        journal.sync().unwrap();
        drop(journal);

        let journal = JournalFile::open(&path).unwrap();
        assert_eq!(journal.read(first[0]).unwrap(), b"alpha");
        assert_eq!(journal.read(first[1]).unwrap(), b"");
        assert_eq!(journal.read(second[0]).unwrap(), vec![7u8; 5000]);
        // Appends after a reopen go after what is there.
        let third = journal.append(&[b"beta"]).unwrap();
        assert_eq!(third[0].offset, 8 + 5 + 8 + 8 + 5000);
        assert_eq!(journal.read(third[0]).unwrap(), b"beta");
        // Locations survive their encoding.
        assert_eq!(
            Location::from_bytes(&third[0].to_bytes()).unwrap(),
            third[0]
        );
        assert!(Location::from_bytes(&[0; 11]).is_err());

        // A location that names the wrong length, a flipped byte, a record past the end: errors.
        let wrong_len = Location { len: 4, ..first[0] };
        assert!(matches!(
            journal.read(wrong_len),
            Err(StoreError::Corrupt { .. })
        ));
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(b"A", 8).unwrap();
        assert!(matches!(
            journal.read(first[0]),
            Err(StoreError::Corrupt { .. })
        ));
        let past = Location {
            offset: 1 << 20,
            len: 3,
        };
        assert!(journal.read(past).is_err());
    }
}
