//! Rejections decided on the leader before proposing, so they never reach the log.
//!
//! Every entry moves ledger time (and with it the state hash), so a command that can only be
//! rejected should not be proposed at all. Wire validation (tally-proto) already catches what
//! needs no state; this catches what needs the applied state but cannot change before the
//! command would apply: accounts and assets are never deleted and their scale never changes,
//! so an unknown account or an amount with more digits than its asset allows stays invalid.
//! (An account whose creation is still in flight, unacknowledged, may be reported unknown;
//! the client that created it has not been told it exists yet, so nothing it knows is wrong.)
//! The applied state must hold every acknowledged write for that, which a leader elected a
//! moment ago (its predecessor's last entries apply once its own first entry commits) or a
//! deposed one that has not heard yet may not: before answering a refusal the leader passes
//! a read barrier (`ledger_service`) and checks again.

use tally_core::validate::check_magnitude;
use tally_core::{
    AccountId, Amount, AssetCode, Command, InvalidInput, LedgerState, Outcome, Reason, Rejection,
};

fn scale_of_account(state: &LedgerState, account: &AccountId) -> Result<u32, Reason> {
    match state.account_scale(account) {
        Some(scale) => Ok(scale),
        None => Err(Reason::UnknownAccount {
            account: account.clone(),
        }),
    }
}

fn check_scale(field: &str, value: Option<Amount>, scale: u32) -> Result<(), Reason> {
    match value {
        Some(value) => check_magnitude(field, value, scale)
            .map_err(|error: InvalidInput| Reason::InvalidInput(error)),
        None => Ok(()),
    }
}

fn reporting_scale(state: &LedgerState) -> u32 {
    state
        .config()
        .map(|config| config.reporting_scale)
        .unwrap_or(tally_core::money::SCALE_MAX)
}

/// `Some(rejection)` when `command` cannot succeed whatever is in flight; `None` to propose it.
pub fn precheck(command: &Command, state: &LedgerState) -> Option<Outcome> {
    let result = match command {
        Command::Usage(event) => scale_of_account(state, &event.account).and_then(|_| {
            let scale = tally_core::carried_cost_scale(reporting_scale(state));
            check_scale("event.cost", event.cost, scale)
        }),
        Command::AddGrant(spec) => scale_of_account(state, &spec.account).and_then(|scale| {
            check_scale("amount", Some(spec.amount), scale)?;
            check_scale("rollover_max", spec.rollover_max, scale)?;
            check_scale("paid", spec.paid, reporting_scale(state))
        }),
        Command::Authorize(spec) => scale_of_account(state, &spec.account)
            .and_then(|scale| check_scale("amount", Some(spec.amount), scale)),
        Command::VoidGrant { account, .. }
        | Command::Release { account, .. }
        | Command::SetAccountStatus { account, .. } => scale_of_account(state, account).map(|_| ()),
        Command::UpdateAccount(update) => scale_of_account(state, &update.account)
            .and_then(|scale| check_scale("credit_limit", update.credit_limit, scale)),
        Command::CreateAccount(spec) => match asset_scale(state, &spec.asset) {
            Some(scale) => check_scale("credit_limit", spec.credit_limit, scale),
            None => Err(Reason::UnknownAsset {
                asset: spec.asset.to_string(),
            }),
        },
        _ => Ok(()),
    };
    result
        .err()
        .map(|reason| Outcome::Rejected(Rejection::from(reason)))
}

fn asset_scale(state: &LedgerState, asset: &AssetCode) -> Option<u32> {
    state.asset(asset).map(|view| view.scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_core::{
        AccountSpec, AssetSpec, Entry, EventId, GrantCategory, GrantSpec, LedgerConfig, Meter,
        UsageEvent,
    };

    fn state() -> LedgerState {
        let mut state = LedgerState::new();
        let result = state.apply(&Entry {
            at_ms: 1_700_000_000_000,
            commands: vec![
                Command::Init(LedgerConfig {
                    reporting_currency: AssetCode::new("USD").unwrap(),
                    reporting_scale: 2,
                    dedup_window_ms: tally_core::DEDUP_WINDOW_MS_DEFAULT,
                }),
                Command::CreateAsset(AssetSpec {
                    code: AssetCode::new("CREDITS").unwrap(),
                    scale: 0,
                }),
                Command::CreateAccount(AccountSpec {
                    id: AccountId::new("acme").unwrap(),
                    asset: AssetCode::new("CREDITS").unwrap(),
                    price_book: None,
                    credit_limit: None,
                    list_price: None,
                    metadata: Vec::new(),
                    thresholds: Vec::new(),
                    auto_recharge: None,
                }),
            ],
        });
        assert!(
            result
                .outcomes
                .iter()
                .all(|outcome| outcome.rejection().is_none()),
            "{result:?}"
        );
        state
    }

    fn grant(account: &str, amount: &str) -> Command {
        Command::AddGrant(GrantSpec {
            account: AccountId::new(account).unwrap(),
            id: tally_core::GrantId::new("g1").unwrap(),
            category: GrantCategory::Promotional,
            amount: Amount::parse("amount", amount).unwrap(),
            priority: None,
            starts_at: None,
            expires_at: None,
            reset_every: None,
            rollover_max: None,
            paid: None,
        })
    }

    fn reason(outcome: Option<Outcome>) -> Option<Reason> {
        outcome.map(|outcome| outcome.rejection().expect("a rejection").reason.clone())
    }

    #[test]
    fn refuses_what_cannot_succeed_and_passes_the_rest() {
        let state = state();
        assert_eq!(reason(precheck(&grant("acme", "10"), &state)), None);
        match reason(precheck(&grant("acme", "10.5"), &state)) {
            Some(Reason::InvalidInput(error)) => assert_eq!(error.field, "amount"),
            other => panic!("expected invalid amount, got {other:?}"),
        }
        assert!(matches!(
            reason(precheck(&grant("nobody", "10"), &state)),
            Some(Reason::UnknownAccount { .. })
        ));
        let usage = Command::Usage(UsageEvent {
            event_id: EventId::new("e1").unwrap(),
            account: AccountId::new("nobody").unwrap(),
            meter: Meter::new("tokens").unwrap(),
            quantity: Amount::from_i64(1),
            dimensions: Default::default(),
            occurred_at: 1_700_000_000_000,
            cost: None,
            hold: None,
        });
        assert!(matches!(
            reason(precheck(&usage, &state)),
            Some(Reason::UnknownAccount { .. })
        ));
        assert_eq!(reason(precheck(&Command::Tick, &state)), None);
        // A carried cost finer than the reporting scale (2) passes, as the ledger accrues it;
        // beyond 12 decimals it is refused, as the ledger would.
        let with_cost = |cost: &str| {
            let Command::Usage(mut event) = usage.clone() else {
                unreachable!()
            };
            event.account = AccountId::new("acme").unwrap();
            event.cost = Some(Amount::parse("cost", cost).unwrap());
            Command::Usage(event)
        };
        assert_eq!(reason(precheck(&with_cost("0.0004"), &state)), None);
        match reason(precheck(&with_cost("0.0000000000001"), &state)) {
            Some(Reason::InvalidInput(error)) => assert_eq!(error.field, "event.cost"),
            other => panic!("expected an invalid cost, got {other:?}"),
        }
    }
}
