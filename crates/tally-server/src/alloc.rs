//! tallyd's allocator (mimalloc) and the one setting it changes.
//!
//! mimalloc hands pages it no longer uses back to the OS after a delay ("purging"), and takes
//! fresh ones again when allocations come back: every node frees a whole entry's events,
//! journal entries and buffers at once and allocates the next entry's a moment later, so under
//! load it kept purging pages it needed again. Faulting those pages back in, and the kernel
//! zeroing them, was 10-12% of a follower's samples at 16 x 100 (perf:
//! `exc_page_fault` / `clear_page_erms` under mimalloc's `mi_page_extend_free`). tallyd keeps
//! freed memory for reuse instead (purge delay -1): a follower's page faults fell from 976 to
//! 3-13 per second, and side by side the same build's CPU per settled event fell 6-8% at
//! 16 x 100 and 16-22% at 4 x 8,190 on every node (scripts/bench/README.md, session 11). The
//! cost: resident memory no longer falls back after a peak, and the peak at a million accounts
//! was 6-10% higher (0.92-0.96 against 0.86-0.87 KiB per account). `MIMALLOC_PURGE_DELAY` in
//! the environment still decides, when set (milliseconds; -1 never; mimalloc's default 1000).

#![allow(unsafe_code)] // Two calls into mimalloc's option table, the only unsafe code here.

use libmimalloc_sys::mi_option_t;

/// `mi_option_purge_delay` in `mimalloc.h` (mimalloc 3: the 16th option, index 15). The
/// tests check it is the option `MIMALLOC_PURGE_DELAY` sets.
const PURGE_DELAY: mi_option_t = 15;

/// The environment variable mimalloc reads for [`PURGE_DELAY`].
pub const PURGE_DELAY_ENV: &str = "MIMALLOC_PURGE_DELAY";

/// Keeps freed memory for reuse (see the module docs), unless [`PURGE_DELAY_ENV`] is set.
/// Called first thing in `main`.
pub fn keep_freed_memory() {
    if std::env::var_os(PURGE_DELAY_ENV).is_some() {
        return;
    }
    // SAFETY: `mi_option_set` stores a number in mimalloc's table of options, which mimalloc
    // reads whenever it considers purging; any value is valid for this option.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) }
}

/// mimalloc's purge delay in milliseconds (-1: never), as it will use it.
pub fn purge_delay_ms() -> i64 {
    // SAFETY: reads (and on first use initializes from the environment) one option.
    unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) as i64 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Run by `the_option_is_the_one_mimalloc_reads_from_its_environment` in a child process
    /// with the variable set: prints what mimalloc took from it.
    #[test]
    #[ignore = "child process of the_option_is_the_one_mimalloc_reads_from_its_environment"]
    fn child_prints_the_purge_delay() {
        println!("purge delay: {} ms", purge_delay_ms());
        keep_freed_memory();
        println!("after keep_freed_memory: {} ms", purge_delay_ms());
    }

    /// The option index is the one mimalloc reads `MIMALLOC_PURGE_DELAY` into (a wrong index
    /// would silently change another setting), and an operator's own value is left alone.
    #[test]
    fn the_option_is_the_one_mimalloc_reads_from_its_environment() {
        let output = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--ignored",
                "--exact",
                "alloc::tests::child_prints_the_purge_delay",
                "--nocapture",
            ])
            .env(PURGE_DELAY_ENV, "4321")
            .output()
            .expect("child test");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}");
        assert!(stdout.contains("purge delay: 4321 ms"), "{stdout}");
        assert!(
            stdout.contains("after keep_freed_memory: 4321 ms"),
            "{stdout}"
        );
    }

    #[test]
    fn freed_memory_is_kept_when_the_environment_does_not_say() {
        if std::env::var_os(PURGE_DELAY_ENV).is_some() {
            return; // the operator's value decides; covered by the test above
        }
        keep_freed_memory();
        assert_eq!(purge_delay_ms(), -1);
    }
}
