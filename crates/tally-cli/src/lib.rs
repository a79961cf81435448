//! tally-cli (under construction).
