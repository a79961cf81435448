//! tally-client (under construction).
