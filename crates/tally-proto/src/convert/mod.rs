//! Conversions between wire (`v1`) and core types.
//!
//! Architecture Invariant: wire -> core goes through core's checked constructors, so the log only
//! ever holds well-formed commands. Every error names the field path as the client sent it,
//! e.g. `events[3].quantity: must be >= 0, got -1`.

mod command;
mod fields;
mod names;
mod outcome;
mod read;
mod view;

pub(crate) use command::{check_batch_len, check_batch_reply, usage_event_of, UsageEventText};
pub use command::{check_usage_event, ToCommand};
pub use fields::{amount_text, month_text, parse_month};
pub(crate) use fields::{dimensions_seen, Seen};
pub use names::{
    account_status_name, consistency_name, grant_category_name, node_role_name,
    parse_account_status, parse_grant_category, parse_reset_period, reset_period_name,
};
pub use outcome::{
    add_grant_reply, authorize_reply, create_account_reply, create_asset_reply, expect_applied,
    publish_costs_reply, publish_prices_reply, reason_details, record_usage_batch_reply,
    record_usage_reply, rejection, release_reply, set_account_status_reply, update_account_reply,
    usage_result, usage_result_kind, usage_results, void_grant_reply,
};
pub use read::{consistency, history_limit, HISTORY_LIMIT_DEFAULT, HISTORY_LIMIT_MAX};
pub use view::{
    account, asset, grant_category, journal_entry, ledger_event, price_version, rate, report,
};
