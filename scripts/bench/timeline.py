#!/usr/bin/env python3
"""Where the time of one request goes, from system calls traced on the whole machine.

With one client sending one request at a time (the 1 x 1 shape), every request passes the
same system calls in the same order, in four processes: the load generator sends it
(`writev`), the leader reads it (`recvfrom`), writes its log (`pwrite64`) and syncs it
(`fdatasync`), sends AppendEntries to the followers (`writev`); a follower reads them, syncs
its log and answers; the leader reads the first answer, applies the entry and replies; the
generator reads the reply and sends the next request. This script cuts each request at those
calls and prints how long each step took (median and mean over every request traced):

    perf record -a -o trace.data -e syscalls:sys_enter_writev,syscalls:sys_exit_recvfrom,\
syscalls:sys_enter_pwrite64,syscalls:sys_enter_fdatasync,syscalls:sys_exit_fdatasync -- sleep 1
    perf script -i trace.data -F comm,pid,tid,time,event > trace.txt
    scripts/bench/timeline.py trace.txt --leader PID --followers PID,PID --client-comm tally-bench

`scripts/bench/tally.sh` does all of it with BENCH_TIMELINE_SHAPE=1x1. Tracing costs each
traced call a microsecond or two, so the steps come out slightly longer than untraced; write
the trace to memory (/dev/shm), not to the disk whose syncs are being measured.
"""

import argparse
import bisect
import re
import sys

EVENT = re.compile(r"\s*(\S+)\s+(\d+)/(\d+)\s+(?:\[\d+\]\s+)?([\d.]+):\s+(\S+):")

WRITEV = "syscalls:sys_enter_writev"
RECV = "syscalls:sys_exit_recvfrom"
PWRITE = "syscalls:sys_enter_pwrite64"
SYNC_START = "syscalls:sys_enter_fdatasync"
SYNC_END = "syscalls:sys_exit_fdatasync"

# (step, what it is made of), in the order a request passes them.
STEPS = [
    ("client sends -> leader reads", "between processes"),
    ("leader reads -> leader writes its log", "leader"),
    ("leader writes its log -> starts its sync", "leader"),
    ("leader's fdatasync", "disk"),
    ("leader synced -> sends AppendEntries", "leader"),
    ("leader sends -> follower reads", "between processes"),
    ("follower reads -> starts its sync", "follower"),
    ("follower's fdatasync", "disk"),
    ("follower synced -> answers", "follower"),
    ("follower answers -> leader reads", "between processes"),
    ("leader reads answer -> replies (commit, apply)", "leader"),
    ("leader replies -> client reads", "between processes"),
    ("client reads -> sends the next", "load generator"),
]


def parse(path, pids):
    """(time in us, process id or comm, event) of every traced call of the processes of interest."""
    events = []
    for line in open(path, errors="replace"):
        match = EVENT.match(line)
        if not match:
            continue
        comm, pid, _tid, at, event = match.groups()
        who = pid if pid in pids else (comm if comm in pids else None)
        if who is not None:
            events.append((float(at) * 1e6, who, event))
    events.sort()
    return events


class Finder:
    """The first call of a process and kind at or after a time."""

    def __init__(self, events):
        self.by = {}
        for at, who, event in events:
            self.by.setdefault((who, event), []).append(at)

    def first(self, who, event, after, before):
        times = self.by.get((who, event), [])
        i = bisect.bisect_left(times, after)
        if i < len(times) and times[i] < before:
            return times[i]
        return None

    def last(self, who, event, after, before):
        times = self.by.get((who, event), [])
        i = bisect.bisect_left(times, before)
        if i > 0 and times[i - 1] >= after:
            return times[i - 1]
        return None


def request_marks(find, start, end, leader, followers, client):
    """The call times of one request sent at `start` (the next one is sent at `end`), or None
    when a call is missing (a heartbeat or an election in between: that request is skipped)."""
    l_recv = find.first(leader, RECV, start, end)
    if l_recv is None:
        return None
    l_write = find.first(leader, PWRITE, l_recv, end)
    l_sync = find.first(leader, SYNC_START, l_recv, end)
    l_synced = find.first(leader, SYNC_END, l_recv, end)
    if None in (l_write, l_sync, l_synced):
        return None
    l_send = find.first(leader, WRITEV, l_synced, end)
    if l_send is None:
        return None
    # The follower whose answer comes first is the one that commits the entry.
    best = None
    for follower in followers:
        f_recv = find.first(follower, RECV, l_send, end)
        if f_recv is None:
            continue
        f_sync = find.first(follower, SYNC_START, f_recv, end)
        f_synced = find.first(follower, SYNC_END, f_recv, end)
        if f_sync is None or f_synced is None:
            continue
        f_answer = find.first(follower, WRITEV, f_synced, end)
        if f_answer is not None and (best is None or f_answer < best[-1]):
            best = (f_recv, f_sync, f_synced, f_answer)
    if best is None:
        return None
    f_recv, f_sync, f_synced, f_answer = best
    l_answer = find.first(leader, RECV, f_answer, end)
    if l_answer is None:
        return None
    c_recv = find.first(client, RECV, l_answer, end)
    if c_recv is None:
        return None
    l_reply = find.last(leader, WRITEV, l_answer, c_recv)
    if l_reply is None:
        return None
    marks = [start, l_recv, l_write, l_sync, l_synced, l_send, f_recv, f_sync, f_synced,
             f_answer, l_answer, l_reply, c_recv, end]
    if any(a > b for a, b in zip(marks, marks[1:])):
        return None
    return marks


def median(values):
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trace", help="`perf script -F comm,pid,tid,time,event` output")
    parser.add_argument("--leader", required=True, help="the leader's process id")
    parser.add_argument("--followers", required=True, help="the followers' process ids, comma-separated")
    parser.add_argument("--client-comm", default="tally-bench",
                        help="the load generator's command name (default tally-bench)")
    args = parser.parse_args()
    followers = [f for f in args.followers.split(",") if f]
    if not followers:
        parser.error("--followers: at least one process id")
    pids = {args.leader, args.client_comm, *followers}
    events = parse(args.trace, pids)
    find = Finder(events)
    sends = find.by.get((args.client_comm, WRITEV), [])
    if len(sends) < 2:
        sys.exit(f"timeline: no requests from `{args.client_comm}` in {args.trace} "
                 "(was the trace taken during a 1 x 1 run, with its process names?)")
    steps = [[] for _ in STEPS]
    cycles = []
    for start, end in zip(sends, sends[1:]):
        marks = request_marks(find, start, end, args.leader, followers, args.client_comm)
        if marks is None:
            continue
        for i, (a, b) in enumerate(zip(marks, marks[1:])):
            steps[i].append(b - a)
        cycles.append(end - start)
    if not cycles:
        sys.exit("timeline: no request passed every step (was it one client sending one event at a time?)")
    left_out = len(sends) - 1 - len(cycles)
    print(f"{len(cycles)} requests traced through every step"
          + (f" ({left_out} left out: a heartbeat or another call crossed them)" if left_out else ""))
    print(f"{'step':<50} {'median':>8} {'mean':>8}  part")
    for (name, part), values in zip(STEPS, steps):
        print(f"{name:<50} {median(values):>6.0f}us {sum(values) / len(values):>6.0f}us  {part}")
    print(f"{'request to request':<50} {median(cycles):>6.0f}us {sum(cycles) / len(cycles):>6.0f}us")
    parts = {}
    for (_, part), values in zip(STEPS, steps):
        parts[part] = parts.get(part, 0.0) + sum(values) / len(values)
    total = sum(cycles) / len(cycles)
    print("mean per request by part: " + ", ".join(
        f"{part} {us:.0f} us ({us / total:.0%})" for part, us in parts.items()))


if __name__ == "__main__":
    main()
