//! tally-proto (under construction).
