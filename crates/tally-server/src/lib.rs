//! tally-server (under construction).
