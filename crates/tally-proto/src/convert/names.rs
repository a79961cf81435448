//! The stable lower-case names of wire enums (`allowance`, `frozen`, `month`, `follower`...),
//! the same words core and the CLI use, in both directions.

use crate::v1;

pub fn grant_category_name(value: i32) -> &'static str {
    match v1::GrantCategory::try_from(value) {
        Ok(v1::GrantCategory::Allowance) => "allowance",
        Ok(v1::GrantCategory::Promotional) => "promotional",
        Ok(v1::GrantCategory::Purchased) => "purchased",
        _ => "unspecified",
    }
}

pub fn parse_grant_category(name: &str) -> Option<v1::GrantCategory> {
    match name {
        "allowance" => Some(v1::GrantCategory::Allowance),
        "promotional" => Some(v1::GrantCategory::Promotional),
        "purchased" => Some(v1::GrantCategory::Purchased),
        _ => None,
    }
}

pub fn account_status_name(value: i32) -> &'static str {
    match v1::AccountStatus::try_from(value) {
        Ok(v1::AccountStatus::Active) => "active",
        Ok(v1::AccountStatus::Frozen) => "frozen",
        Ok(v1::AccountStatus::Closed) => "closed",
        _ => "unspecified",
    }
}

pub fn parse_account_status(name: &str) -> Option<v1::AccountStatus> {
    match name {
        "active" => Some(v1::AccountStatus::Active),
        "frozen" => Some(v1::AccountStatus::Frozen),
        "closed" => Some(v1::AccountStatus::Closed),
        _ => None,
    }
}

/// `day`, `week`, `month`, or `none` for no reset.
pub fn reset_period_name(value: i32) -> &'static str {
    match v1::ResetPeriod::try_from(value) {
        Ok(v1::ResetPeriod::Day) => "day",
        Ok(v1::ResetPeriod::Week) => "week",
        Ok(v1::ResetPeriod::Month) => "month",
        _ => "none",
    }
}

pub fn parse_reset_period(name: &str) -> Option<v1::ResetPeriod> {
    match name {
        "day" => Some(v1::ResetPeriod::Day),
        "week" => Some(v1::ResetPeriod::Week),
        "month" => Some(v1::ResetPeriod::Month),
        "none" => Some(v1::ResetPeriod::Unspecified),
        _ => None,
    }
}

/// `linearizable` or `follower`.
pub fn consistency_name(value: i32) -> &'static str {
    match v1::Consistency::try_from(value) {
        Ok(v1::Consistency::Follower) => "follower",
        _ => "linearizable",
    }
}

/// `leader`, `follower`, `candidate`, `learner`, `shutdown` or `unknown`.
pub fn node_role_name(value: i32) -> &'static str {
    match v1::NodeRole::try_from(value) {
        Ok(v1::NodeRole::Leader) => "leader",
        Ok(v1::NodeRole::Follower) => "follower",
        Ok(v1::NodeRole::Candidate) => "candidate",
        Ok(v1::NodeRole::Learner) => "learner",
        Ok(v1::NodeRole::Shutdown) => "shutdown",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_core() {
        use tally_core::{AccountStatus, GrantCategory, ResetPeriod};
        for (core, wire) in [
            (GrantCategory::Allowance, v1::GrantCategory::Allowance),
            (GrantCategory::Promotional, v1::GrantCategory::Promotional),
            (GrantCategory::Purchased, v1::GrantCategory::Purchased),
        ] {
            assert_eq!(grant_category_name(wire as i32), core.as_str());
            assert_eq!(parse_grant_category(core.as_str()), Some(wire));
        }
        for (core, wire) in [
            (AccountStatus::Active, v1::AccountStatus::Active),
            (AccountStatus::Frozen, v1::AccountStatus::Frozen),
            (AccountStatus::Closed, v1::AccountStatus::Closed),
        ] {
            assert_eq!(account_status_name(wire as i32), core.as_str());
            assert_eq!(parse_account_status(core.as_str()), Some(wire));
        }
        for (core, wire) in [
            (ResetPeriod::Day, v1::ResetPeriod::Day),
            (ResetPeriod::Week, v1::ResetPeriod::Week),
            (ResetPeriod::Month, v1::ResetPeriod::Month),
        ] {
            assert_eq!(reset_period_name(wire as i32), core.as_str());
            assert_eq!(parse_reset_period(core.as_str()), Some(wire));
        }
        assert_eq!(reset_period_name(0), "none");
        assert_eq!(grant_category_name(42), "unspecified");
        assert_eq!(parse_grant_category("Allowance"), None);
        assert_eq!(consistency_name(0), "linearizable");
        assert_eq!(consistency_name(2), "follower");
        assert_eq!(node_role_name(v1::NodeRole::Learner as i32), "learner");
    }
}
