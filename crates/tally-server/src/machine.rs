//! What the machine's own settings mean for a node, said once at startup: idle vCPUs that
//! halt (latency), and the open-files limit (raised to the hard limit).
//!
//! On a KVM guest whose cpuidle driver is `haltpoll`, an idle vCPU polls for up to
//! `guest_halt_poll_ns` before it halts. With 0 it halts at once, and each wake-up on the path of
//! a write (the request arriving, the log's `fdatasync` completing, a follower's reply, one task
//! waking another) then waits for the host to run the vCPU again. A write with one request in
//! flight is a chain of such wake-ups: on the development VM, 200 us of polling took one client
//! sending one event at a time from 1,694 to 2,368-2,511 events/s and one `fdatasync` from 85
//! to 65 us (scripts/bench/README.md, session 20). tallyd changes nothing; it says so in its
//! log, for the operator to decide (the setting is machine-wide and costs host CPU while idle).

use std::path::Path;

const DRIVER_FILE: &str = "/sys/devices/system/cpu/cpuidle/current_driver";
const HALT_POLL_FILE: &str = "/sys/module/haltpoll/parameters/guest_halt_poll_ns";

/// The advice for this machine, if its idle vCPUs halt without polling.
pub fn idle_polling_advice() -> Option<String> {
    let read = |path: &str| std::fs::read_to_string(Path::new(path)).ok();
    advice(
        read(DRIVER_FILE).as_deref(),
        read(HALT_POLL_FILE).as_deref(),
    )
}

/// The advice given the cpuidle driver's name and `guest_halt_poll_ns` as read from sysfs.
fn advice(driver: Option<&str>, halt_poll_ns: Option<&str>) -> Option<String> {
    if driver?.trim() != "haltpoll" || halt_poll_ns?.trim() != "0" {
        return None;
    }
    Some(format!(
        "idle vCPUs on this VM halt without polling ({HALT_POLL_FILE} is 0): every wake-up on \
         a write's path waits for the host, which lengthens writes sent one at a time; as root, \
         `echo 200000 > {HALT_POLL_FILE}` lets an idle vCPU poll for up to 200 us first \
         (machine-wide; see README, Operations)"
    ))
}

/// The most open files a node asks for: far above what it uses (two listeners of
/// `limits.connections_max` connections, Raft peers, log segments, sled's files, snapshots),
/// and a bound on a hard limit of "unlimited".
const OPEN_FILES_WANTED: u64 = 1 << 20;

/// Raises this process's soft limit of open files to its hard limit (at most
/// [`OPEN_FILES_WANTED`]), as a server that holds a file per connection must: many supervisors
/// start services with a soft limit of 1,024, fewer than two listeners of 1,024 connections
/// (`limits.connections_max`) and the node's own files need, and a node out of descriptors
/// cannot open a log segment or a snapshot, which stops Raft. Returns the limit before and
/// after.
#[allow(unsafe_code)] // getrlimit/setrlimit: no safe wrapper in the dependencies.
pub fn raise_open_files_limit() -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    let wanted = limit.rlim_max.min(OPEN_FILES_WANTED);
    if before >= wanted {
        return Ok((before, before));
    }
    limit.rlim_cur = wanted;
    // SAFETY: setrlimit reads the struct it is given; raising the soft limit up to the hard
    // one needs no privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((before, wanted))
}

/// Open files a node with `connections_max` connections per listener may hold: both listeners
/// full, plus room for its own files (log segments, sled, journal, snapshots, peers).
pub fn open_files_needed(connections_max: usize) -> u64 {
    2 * connections_max as u64 + 256
}

#[cfg(test)]
mod tests {
    use super::advice;

    #[test]
    #[allow(unsafe_code)] // as raise_open_files_limit
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in raise_open_files_limit; this test process only.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        let hard = limit.rlim_max.min(super::OPEN_FILES_WANTED);
        // A supervisor's low soft limit.
        let low = hard.min(256);
        limit.rlim_cur = low;
        // SAFETY: as above; lowering the soft limit needs no privilege.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);
        assert_eq!(super::raise_open_files_limit().unwrap(), (low, hard));
        // SAFETY: as above.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(limit.rlim_cur, hard);
        // Already there: nothing to do.
        assert_eq!(super::raise_open_files_limit().unwrap(), (hard, hard));
    }

    #[test]
    fn advice_only_for_a_haltpoll_guest_that_never_polls() {
        assert!(advice(Some("haltpoll\n"), Some("0\n"))
            .unwrap()
            .contains("guest_halt_poll_ns"));
        assert_eq!(advice(Some("haltpoll\n"), Some("200000\n")), None);
        assert_eq!(advice(Some("intel_idle\n"), Some("0\n")), None);
        assert_eq!(advice(Some("haltpoll"), None), None);
        assert_eq!(advice(None, None), None);
    }
}
