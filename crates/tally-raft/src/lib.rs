//! tally-raft (under construction).
