//! tally-server: the `tallyd` node (under construction; see the summary as it fills in).
//!
//! - [`config::Config`]: the TOML configuration, validated with errors naming the field.
//! - [`metrics::Metrics`]: counters and histograms rendered as Prometheus text.
//! - [`http::serve`]: `/metrics`, `/health/live`, `/health/ready`.
//! - [`shutdown::Shutdown`]: SIGTERM / Ctrl-C as one watchable signal.

pub mod config;
pub mod http;
pub mod metrics;
pub mod proposer;
pub mod shutdown;
