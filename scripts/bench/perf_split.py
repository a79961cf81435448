#!/usr/bin/env python3
"""Where a process's samples go, from `perf script` output of a call-graph profile.

    perf record -F 499 --call-graph dwarf,16384 -p PID -o out.data -- sleep 4
    perf script -i out.data > out.txt
    scripts/bench/perf_split.py owners out.txt            # each sample to the nearest known crate
    scripts/bench/perf_split.py functions out.txt REGEX   # inclusive share of matching functions

`owners` charges each sample to the frame nearest the leaf that belongs to a known crate
(tally-core, sled, hyper/h2/tonic...) and says how much of it ran in the kernel;
`functions` gives, for every function whose name matches REGEX, the share of samples with it
anywhere on the stack.
"""

import collections
import re
import sys

OWNERS = [
    ("tally_core", r"tally_core::"),
    ("tally_store", r"tally_store::"),
    ("openraft", r"openraft::"),
    ("tally_raft", r"tally_raft::"),
    ("tally_proto", r"tally_proto::"),
    ("prost", r"prost::"),
    ("tally_server", r"tally_server::"),
    ("grpc (h2/hyper/tonic/tower)", r"h2::|hyper|tonic::|tower|http::|http_body"),
    ("sled", r"sled::"),
    ("bincode", r"bincode"),
    ("tokio runtime", r"tokio::"),
    ("parking_lot", r"parking_lot"),
    ("std (syscalls from std: fsync, sockets, threads)", r"std::"),
]


def samples(path):
    """Each sample's stack, leaf first, as function names, and whether its leaf is in the kernel."""
    stack, in_kernel = [], False
    for line in open(path, errors="replace"):
        if not line.strip():
            if stack:
                yield stack, in_kernel
            stack = []
        elif line[0] in "\t ":
            if not stack:
                in_kernel = "[kernel" in line
            parts = line.strip().split(" ", 1)
            name = parts[1] if len(parts) == 2 else parts[0]
            name = re.sub(r"\+0x[0-9a-f]+.*", "", name).replace(" (inlined)", "")
            stack.append(name)
    if stack:
        yield stack, in_kernel


def owners(path):
    counts, kernel, total = collections.Counter(), collections.Counter(), 0
    for stack, in_kernel in samples(path):
        total += 1
        owner = "other"
        for frame in stack:
            found = next((name for name, pattern in OWNERS if re.search(pattern, frame)), None)
            if found:
                owner = found
                break
        counts[owner] += 1
        kernel[owner] += in_kernel
    print(f"{total} samples: share (of which the leaf is in the kernel)")
    for name, n in counts.most_common():
        print(f"{100 * n / total:5.1f}%  ({100 * kernel[name] / total:4.1f}%)  {name}")


def functions(path, pattern, limit=50):
    wanted, counts, total = re.compile(pattern), collections.Counter(), 0
    for stack, _ in samples(path):
        total += 1
        for name in set(frame for frame in stack if wanted.search(frame)):
            counts[name] += 1
    for name, n in counts.most_common(limit):
        print(f"{100 * n / total:5.1f}% {name[:160]}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "owners":
        owners(sys.argv[2])
    elif len(sys.argv) in (4, 5) and sys.argv[1] == "functions":
        functions(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) == 5 else 50)
    else:
        sys.exit(__doc__)
