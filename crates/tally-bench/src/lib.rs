//! tally-bench (under construction).
