//! Keeps the page cache of the append-only files (the Raft log's segments, the journal file)
//! to their newest bytes, so that appending reuses pages the kernel already has.
//!
//! Why: a file that only grows needs a new page-cache page for every 4 KiB written, and the
//! kernel takes it from its free memory. On a VM whose free memory the host takes back (a
//! balloon with free page reporting, as on the dev VM), a page it has not used lately must
//! first be faulted in by the host: writing 2 MiB into new pages of a growing file took a
//! median 7.2 ms there, against 0.58 ms when the file's older pages were dropped as it grew
//! (so the kernel handed the same pages out again), about 14 us against 1.1 us per 4 KiB.
//! At 4 x 8,190 a follower's log and journal `pwrite`s (1.4 and 2 MiB per entry) took 2 to
//! 20 ms each and `copy_folio_from_iter_atomic` 13% of its samples.
//!
//! How: after an append, once at least [`STEP_BYTES`] were written since the last time,
//! `posix_fadvise(DONTNEED)` the file's range that ends [`KEEP_BYTES`] before its end. That
//! advice never loses data: Linux starts writing back dirty pages of the range and drops only
//! clean ones (the journal's advice runs after the applied entry has released the state's
//! write lock, since its first advice of a range starts write-back). A range is advised
//! twice, one step apart: the log's pages are clean already
//! (every append is synced) and go at once; the journal's (not synced per append) are written
//! back at the first advice and dropped at the second (a page still being written back then
//! stays cached; nothing else happens to it). The newest [`KEEP_BYTES`] stay cached, so recent
//! history and recent log entries are read from memory; older reads go to the disk. The
//! journal is written back within seconds instead of the kernel's 30 s: the same writes, done
//! sooner.
//!
//! Measured on the dev VM, one cluster at a time (the two builds side by side share the
//! kernel's free pages, so the one without trimming gets the other's): 4 x 8,190 +11% and
//! +18% events/s, followers' CPU per event -14% and -15%; 16 x 100 level over three pairs
//! (events/s and the whole machine's busy time per event).

use std::fs::File;
use std::num::NonZeroU64;

use rustix::fs::{fadvise, Advice};

/// Bytes at the end of a file whose pages are left in the cache.
pub(crate) const KEEP_BYTES: u64 = 16 * 1024 * 1024;

/// Bytes appended between two advices.
pub(crate) const STEP_BYTES: u64 = 8 * 1024 * 1024;

/// Where a growing file's pages were advised away.
#[derive(Debug)]
pub(crate) struct Trim {
    /// Pages below this were advised at least twice (dropped, if they were clean by then).
    dropped: u64,
    /// Pages below this were advised at least once (written back, if they were dirty).
    advised: u64,
}

impl Trim {
    /// For a file whose pages from `start` on may be cached (0: any).
    pub(crate) fn new(start: u64) -> Trim {
        Trim {
            dropped: start,
            advised: start,
        }
    }

    /// After an append that ends at `end`: advises the pages below `end - KEEP_BYTES` away
    /// when `STEP_BYTES` were appended since the last advice. Errors are ignored: it is only
    /// advice, and a cache it could not trim costs speed, never data.
    pub(crate) fn after_append(&mut self, file: &File, end: u64) {
        let upto = end.saturating_sub(KEEP_BYTES);
        if upto < self.advised.saturating_add(STEP_BYTES) {
            return;
        }
        advise_away(file, self.dropped, NonZeroU64::new(upto - self.dropped));
        self.dropped = self.advised;
        self.advised = upto;
    }

    /// The whole file, e.g. a log segment that was closed and synced.
    pub(crate) fn all(file: &File) {
        advise_away(file, 0, None);
    }
}

/// `len` bytes from `from` (`None`: to the end of the file).
fn advise_away(file: &File, from: u64, len: Option<NonZeroU64>) {
    if let Err(error) = fadvise(file, from, len, Advice::DontNeed) {
        tracing::debug!(%error, from, ?len, "posix_fadvise(DONTNEED) failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileExt;

    const PAGE: u64 = 4096;

    /// Which pages of `file`'s first `len` bytes are in the page cache (`mincore` over a
    /// read-only mapping, which faults nothing in).
    #[allow(unsafe_code)] // mmap/mincore/munmap: no safe wrapper in the dependencies; test only.
    fn resident(file: &File, len: u64) -> Vec<bool> {
        let pages = len.div_ceil(PAGE) as usize;
        let mut vec = vec![0u8; pages];
        // SAFETY: a fresh shared read-only mapping of `len` bytes of an open file, only passed
        // to mincore (never dereferenced) and unmapped before returning; `vec` holds one byte
        // per page of it, as mincore requires.
        unsafe {
            let addr = libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(addr, libc::MAP_FAILED, "mmap");
            assert_eq!(libc::mincore(addr, len as usize, vec.as_mut_ptr()), 0);
            assert_eq!(libc::munmap(addr, len as usize), 0);
        }
        vec.iter().map(|page| page & 1 == 1).collect()
    }

    /// A scratch directory on a file system with a page cache: not tmpfs, whose pages are the
    /// file itself (the system temp dir is tmpfs on some machines; then the crate's own).
    fn scratch_dir() -> tempfile::TempDir {
        const TMPFS_MAGIC: i64 = 0x0102_1994;
        let dir = tempfile::tempdir().unwrap();
        let on_tmpfs = File::open(dir.path())
            .and_then(|d| rustix::fs::fstatfs(&d).map_err(std::io::Error::from))
            .is_ok_and(|fs| fs.f_type == TMPFS_MAGIC);
        if on_tmpfs {
            tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap()
        } else {
            dir
        }
    }

    fn file_in(dir: &tempfile::TempDir) -> File {
        File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap()
    }

    #[test]
    fn advises_one_step_at_a_time_and_keeps_the_newest_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let file = file_in(&dir);
        let mut trim = Trim::new(0);
        // Less than KEEP + STEP: nothing advised yet.
        trim.after_append(&file, KEEP_BYTES + STEP_BYTES - 1);
        assert_eq!((trim.dropped, trim.advised), (0, 0));
        trim.after_append(&file, KEEP_BYTES + STEP_BYTES);
        assert_eq!((trim.dropped, trim.advised), (0, STEP_BYTES));
        // Not a whole step further: unchanged.
        trim.after_append(&file, KEEP_BYTES + 2 * STEP_BYTES - 1);
        assert_eq!((trim.dropped, trim.advised), (0, STEP_BYTES));
        trim.after_append(&file, KEEP_BYTES + 3 * STEP_BYTES);
        assert_eq!((trim.dropped, trim.advised), (STEP_BYTES, 3 * STEP_BYTES));
        trim.after_append(&file, KEEP_BYTES + 4 * STEP_BYTES + 5);
        assert_eq!(
            (trim.dropped, trim.advised),
            (3 * STEP_BYTES, 4 * STEP_BYTES + 5)
        );
    }

    /// Appends of 1 MiB, synced as the log's are: the pages more than KEEP_BYTES behind the
    /// end leave the cache, the newest stay, and every byte still reads back (from the disk).
    /// Unsynced appends (the journal's) leave it too, once written back.
    #[test]
    fn old_pages_leave_the_cache_and_their_bytes_stay() {
        for synced in [true, false] {
            let dir = scratch_dir();
            let file = file_in(&dir);
            let chunk: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
            let rounds = 56u64;
            let mut trim = Trim::new(0);
            let mut end = 0u64;
            let mut from = 0;
            for round in 0..rounds {
                if !synced && round == 48 {
                    // Unsynced (the journal), a page still being written back at its second
                    // advice stays cached (nothing is lost by that); once written back, the
                    // next advice drops everything it covers.
                    file.sync_data().unwrap();
                    from = trim.dropped;
                }
                let mut data = chunk.clone();
                data[0] = round as u8;
                file.write_all_at(&data, end).unwrap();
                end += data.len() as u64;
                if synced {
                    file.sync_data().unwrap();
                }
                trim.after_append(&file, end);
            }
            // Synced (the log), every advised page was clean: all of them are gone.
            let to = if synced { trim.dropped } else { trim.advised };
            assert!(to - from >= 16 * 1024 * 1024, "synced {synced}");
            let pages = resident(&file, end);
            let advised = &pages[(from / PAGE) as usize..(to / PAGE) as usize];
            assert!(
                advised.iter().all(|page| !page),
                "synced {synced}: {} of {} advised pages still cached",
                advised.iter().filter(|page| **page).count(),
                advised.len()
            );
            let newest = ((end - KEEP_BYTES) / PAGE) as usize;
            assert!(
                pages[newest..].iter().all(|page| *page),
                "synced {synced}: the newest bytes left the cache"
            );
            let mut read = vec![0u8; chunk.len()];
            for round in 0..rounds {
                file.read_exact_at(&mut read, round * chunk.len() as u64)
                    .unwrap();
                assert_eq!(read[0], round as u8);
                assert_eq!(read[1..], chunk[1..]);
            }
        }
    }
}
