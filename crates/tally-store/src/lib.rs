//! tally-store (under construction).
