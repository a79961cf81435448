//! What the machine's own settings mean for a node's latency, said once at startup.
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

#[cfg(test)]
mod tests {
    use super::advice;

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
