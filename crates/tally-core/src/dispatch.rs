//! Routes each command to its handler and turns handler errors into rejections.

use crate::command::{Command, LedgerConfig};
use crate::outcome::{Applied, Outcome, Reason, Rejection};
use crate::state::{ApplyResult, LedgerState};

impl LedgerState {
    pub(crate) fn apply_command(&mut self, command: &Command, result: &mut ApplyResult) -> Outcome {
        if self.config.is_none() {
            match command {
                Command::Init(config) => return to_outcome(self.init(config)),
                Command::Tick => return Outcome::Applied(Applied::Ticked),
                _ => return Outcome::Rejected(Rejection::from(Reason::NotInitialized)),
            }
        }
        let handled = match command {
            Command::Init(config) => self.init(config),
            Command::CreateAsset(spec) => self.create_asset(spec),
            Command::CreateAccount(spec) => self.create_account(spec),
            Command::UpdateAccount(update) => self.update_account(update, result),
            Command::SetAccountStatus { account, status } => {
                self.set_status(account, *status, result)
            }
            Command::AddGrant(spec) => self.add_grant(spec, result),
            Command::VoidGrant {
                account,
                grant,
                reason,
            } => self.void_grant(account, grant, reason, result),
            Command::PublishPrices(spec) => self.publish_prices(spec),
            Command::PublishCosts(spec) => self.publish_costs(spec),
            Command::Usage(event) => return self.settle(event, result),
            Command::UsageBatch { events, atomic } => {
                return self.settle_batch(events, *atomic, result)
            }
            Command::Authorize(spec) => self.authorize(spec, result),
            Command::Release { account, hold } => self.release(account, hold, result),
            Command::Tick => {
                self.run_all_due(result);
                Ok(Applied::Ticked)
            }
        };
        to_outcome(handled)
    }

    fn init(&mut self, config: &LedgerConfig) -> Result<Applied, Reason> {
        if let Some(existing) = &self.config {
            return if existing == config {
                Ok(Applied::AlreadyApplied)
            } else {
                Err(Reason::AlreadyExists {
                    what: "ledger configuration".into(),
                    id: existing.reporting_currency.to_string(),
                })
            };
        }
        crate::admin::check_scale("reporting_scale", config.reporting_scale)?;
        if config.dedup_window_ms < 60_000 || config.dedup_window_ms > 400 * 86_400_000 {
            return Err(crate::InvalidInput::new(
                "dedup_window_ms",
                format!(
                    "must be between 1 minute and 400 days, got {} ms",
                    config.dedup_window_ms
                ),
            )
            .into());
        }
        self.config = Some(config.clone());
        self.assets
            .insert(config.reporting_currency.clone(), config.reporting_scale);
        Ok(Applied::Initialized)
    }
}

fn to_outcome(handled: Result<Applied, Reason>) -> Outcome {
    match handled {
        Ok(applied) => Outcome::Applied(applied),
        Err(reason) => Outcome::Rejected(Rejection { reason }),
    }
}

impl From<crate::InvalidInput> for Reason {
    fn from(error: crate::InvalidInput) -> Self {
        Reason::InvalidInput(error)
    }
}
