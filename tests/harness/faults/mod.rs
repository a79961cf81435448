//! Fault injection (issue 5): a controllable proxy per peer link, a cluster wired through it,
//! the nemesis, the recorded workload and the checker. See tests/README.md.

pub mod checker;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod proxy;
pub mod run;
pub mod workload;
