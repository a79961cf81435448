//! Wire requests -> core commands, validated field by field.

use tally_core::{
    AccountId, AccountSpec, AccountStatus, AccountUpdate, Amount, AssetCode, AssetSpec,
    AutoRecharge, BookId, Command, CostBookVersionSpec, Dimensions, EventId, GrantCategory,
    GrantId, GrantSpec, HoldId, HoldSpec, InvalidInput, Meter, PriceBookVersionSpec, Rate,
    RateModel, ResetPeriod, Tier, UsageEvent, BATCH_EVENTS_MAX, HOLD_EXPIRES_IN_MS_MAX,
    HOLD_EXPIRES_IN_MS_MIN, RATES_MAX, REASON_LEN_MAX, THRESHOLDS_MAX, TIERS_MAX,
};

use super::fields::{
    amount, amount_non_negative, amount_positive, dimensions_seen, key_values,
    optional_amount_non_negative, pairs, path, required_enum, required_time_ms, Seen,
};
use crate::error::TallyError;
use crate::v1;

/// Largest asset scale (digits after the point).
const SCALE_MAX: u32 = tally_core::money::SCALE_MAX;

/// A write request that becomes exactly one core [`Command`].
pub trait ToCommand {
    /// Validates every field and builds the command. Errors are `invalid_argument` naming the
    /// field path, or `request_too_large` for a count above a limit.
    fn to_command(&self) -> Result<Command, TallyError>;
}

impl ToCommand for v1::CreateAssetRequest {
    fn to_command(&self) -> Result<Command, TallyError> {
        let code = AssetCode::parse_as("code", self.code.as_str())?;
        if self.scale > SCALE_MAX {
            return Err(InvalidInput::new(
                "scale",
                format!("must be 0..={SCALE_MAX}, got {}", self.scale),
            )
            .into());
        }
        Ok(Command::CreateAsset(AssetSpec {
            code,
            scale: self.scale,
        }))
    }
}

fn thresholds(field: &str, wire: &[String]) -> Result<Vec<Amount>, InvalidInput> {
    if wire.len() > THRESHOLDS_MAX {
        return Err(InvalidInput::new(
            field,
            format!(
                "has {} thresholds; at most {THRESHOLDS_MAX} allowed",
                wire.len()
            ),
        ));
    }
    wire.iter()
        .enumerate()
        .map(|(index, text)| amount(&format!("{field}[{index}]"), text))
        .collect()
}

fn auto_recharge(field: &str, wire: &v1::AutoRecharge) -> Result<AutoRecharge, InvalidInput> {
    Ok(AutoRecharge {
        below: amount(&path(field, "below"), &wire.below)?,
        amount: amount_positive(&path(field, "amount"), &wire.amount)?,
    })
}

fn optional_book(
    field: &'static str,
    wire: Option<&String>,
) -> Result<Option<BookId>, InvalidInput> {
    wire.map(|text| BookId::parse_as(field, text.as_str()))
        .transpose()
}

impl ToCommand for v1::CreateAccountRequest {
    fn to_command(&self) -> Result<Command, TallyError> {
        Ok(Command::CreateAccount(AccountSpec {
            id: AccountId::parse_as("id", self.id.as_str())?,
            asset: AssetCode::parse_as("asset", self.asset.as_str())?,
            price_book: optional_book("price_book", self.price_book.as_ref())?,
            credit_limit: optional_amount_non_negative(
                "credit_limit",
                self.credit_limit.as_deref(),
            )?,
            list_price: optional_amount_non_negative("list_price", self.list_price.as_deref())?,
            metadata: pairs("metadata", &self.metadata)?,
            thresholds: thresholds("thresholds", &self.thresholds)?,
            auto_recharge: self
                .auto_recharge
                .as_ref()
                .map(|wire| auto_recharge("auto_recharge", wire))
                .transpose()?,
        }))
    }
}

impl ToCommand for v1::UpdateAccountRequest {
    fn to_command(&self) -> Result<Command, TallyError> {
        use v1::update_account_request::{AutoRechargeChange, PriceBookChange};
        let price_book = match &self.price_book_change {
            None => None,
            Some(PriceBookChange::SetPriceBook(book)) => {
                Some(Some(BookId::parse_as("set_price_book", book.as_str())?))
            }
            Some(PriceBookChange::ClearPriceBook(true)) => Some(None),
            Some(PriceBookChange::ClearPriceBook(false)) => {
                return Err(InvalidInput::new("clear_price_book", "must be true when set").into())
            }
        };
        let auto_recharge_change = match &self.auto_recharge_change {
            None => None,
            Some(AutoRechargeChange::SetAutoRecharge(wire)) => {
                Some(Some(auto_recharge("set_auto_recharge", wire)?))
            }
            Some(AutoRechargeChange::ClearAutoRecharge(true)) => Some(None),
            Some(AutoRechargeChange::ClearAutoRecharge(false)) => {
                return Err(
                    InvalidInput::new("clear_auto_recharge", "must be true when set").into(),
                )
            }
        };
        Ok(Command::UpdateAccount(AccountUpdate {
            account: AccountId::parse_as("account", self.account.as_str())?,
            price_book,
            credit_limit: optional_amount_non_negative(
                "credit_limit",
                self.credit_limit.as_deref(),
            )?,
            list_price: optional_amount_non_negative("list_price", self.list_price.as_deref())?,
            metadata: self
                .metadata
                .as_ref()
                .map(|list| pairs("metadata.pairs", &list.pairs))
                .transpose()?,
            thresholds: self
                .thresholds
                .as_ref()
                .map(|list| thresholds("thresholds.amounts", &list.amounts))
                .transpose()?,
            auto_recharge: auto_recharge_change,
        }))
    }
}

impl ToCommand for v1::SetAccountStatusRequest {
    fn to_command(&self) -> Result<Command, TallyError> {
        let account = AccountId::parse_as("account", self.account.as_str())?;
        let status: v1::AccountStatus = required_enum(
            "status",
            self.status,
            v1::AccountStatus::Unspecified as i32,
            "ACTIVE, FROZEN, CLOSED",
        )?;
        let status = match status {
            v1::AccountStatus::Active => AccountStatus::Active,
            v1::AccountStatus::Frozen => AccountStatus::Frozen,
            v1::AccountStatus::Closed => AccountStatus::Closed,
            v1::AccountStatus::Unspecified => unreachable!("rejected by required_enum"),
        };
        Ok(Command::SetAccountStatus { account, status })
    }
}

fn reset_period(field: &str, value: i32) -> Result<Option<ResetPeriod>, InvalidInput> {
    match v1::ResetPeriod::try_from(value) {
        Ok(v1::ResetPeriod::Unspecified) => Ok(None),
        Ok(v1::ResetPeriod::Day) => Ok(Some(ResetPeriod::Day)),
        Ok(v1::ResetPeriod::Week) => Ok(Some(ResetPeriod::Week)),
        Ok(v1::ResetPeriod::Month) => Ok(Some(ResetPeriod::Month)),
        Err(_) => Err(InvalidInput::new(
            field,
            format!("unknown value {value}; expected DAY, WEEK, MONTH or unset"),
        )),
    }
}

impl ToCommand for v1::AddGrantRequest {
    fn to_command(&self) -> Result<Command, TallyError> {
        let account = AccountId::parse_as("account", self.account.as_str())?;
        let id = GrantId::parse_as("grant_id", self.grant_id.as_str())?;
        let category: v1::GrantCategory = required_enum(
            "category",
            self.category,
            v1::GrantCategory::Unspecified as i32,
            "ALLOWANCE, PROMOTIONAL, PURCHASED",
        )?;
        let category = match category {
            v1::GrantCategory::Allowance => GrantCategory::Allowance,
            v1::GrantCategory::Promotional => GrantCategory::Promotional,
            v1::GrantCategory::Purchased => GrantCategory::Purchased,
            v1::GrantCategory::Unspecified => unreachable!("rejected by required_enum"),
        };
        let priority = match self.priority {
            None => None,
            Some(priority) if priority <= 100 => Some(priority as u8),
            Some(priority) => {
                return Err(InvalidInput::new(
                    "priority",
                    format!("must be 0..=100, got {priority}"),
                )
                .into())
            }
        };
        if let (Some(starts_at), Some(expires_at)) = (self.starts_at_ms, self.expires_at_ms) {
            if expires_at <= starts_at {
                return Err(InvalidInput::new(
                    "expires_at_ms",
                    format!(
                        "must be after starts_at_ms ({}), got {}",
                        tally_core::format_utc(starts_at),
                        tally_core::format_utc(expires_at)
                    ),
                )
                .into());
            }
        }
        let reset_every = reset_period("reset_every", self.reset_every)?;
        if reset_every.is_some() && category != GrantCategory::Allowance {
            return Err(InvalidInput::new("reset_every", "only allowances can reset").into());
        }
        let rollover_max =
            optional_amount_non_negative("rollover_max", self.rollover_max.as_deref())?;
        if rollover_max.is_some() && reset_every.is_none() {
            return Err(InvalidInput::new("rollover_max", "needs reset_every").into());
        }
        let paid = optional_amount_non_negative("paid", self.paid.as_deref())?;
        match (category, paid) {
            (GrantCategory::Purchased, None) => {
                return Err(InvalidInput::new("paid", "is required for a purchased grant").into())
            }
            (GrantCategory::Promotional, Some(paid)) if !paid.is_zero() => {
                return Err(InvalidInput::new(
                    "paid",
                    format!("must be 0 or absent for a promotional grant, got {paid}"),
                )
                .into())
            }
            _ => {}
        }
        Ok(Command::AddGrant(GrantSpec {
            account,
            id,
            category,
            amount: amount_positive("amount", &self.amount)?,
            priority,
            starts_at: self.starts_at_ms,
            expires_at: self.expires_at_ms,
            reset_every,
            rollover_max,
            paid,
        }))
    }
}

impl ToCommand for v1::VoidGrantRequest {
    fn to_command(&self) -> Result<Command, TallyError> {
        let account = AccountId::parse_as("account", self.account.as_str())?;
        let grant = GrantId::parse_as("grant_id", self.grant_id.as_str())?;
        let reason = self.reason.trim();
        if reason.is_empty() {
            return Err(InvalidInput::new("reason", "must say why the grant is voided").into());
        }
        if reason.len() > REASON_LEN_MAX {
            return Err(InvalidInput::new(
                "reason",
                format!(
                    "is {} bytes long; at most {REASON_LEN_MAX} allowed",
                    reason.len()
                ),
            )
            .into());
        }
        if reason.chars().any(char::is_control) {
            return Err(InvalidInput::new("reason", "must not contain control characters").into());
        }
        Ok(Command::VoidGrant {
            account,
            grant,
            reason: reason.to_string(),
        })
    }
}

/// `per` defaults to 1 when empty.
fn per(field: &str, text: &str) -> Result<Amount, InvalidInput> {
    if text.trim().is_empty() {
        Ok(Amount::ONE)
    } else {
        amount_positive(field, text)
    }
}

fn rate_model(field: &str, wire: Option<&v1::rate::Model>) -> Result<RateModel, InvalidInput> {
    use v1::rate::Model;
    match wire {
        None => Err(InvalidInput::new(
            path(field, "model"),
            "must be one of per_unit, package, graduated, flat",
        )),
        Some(Model::PerUnit(model)) => {
            let field = path(field, "per_unit");
            Ok(RateModel::PerUnit {
                unit_price: amount_non_negative(&path(&field, "unit_price"), &model.unit_price)?,
                per: per(&path(&field, "per"), &model.per)?,
            })
        }
        Some(Model::Package(model)) => {
            let field = path(field, "package");
            Ok(RateModel::Package {
                size: amount_positive(&path(&field, "size"), &model.size)?,
                price: amount_non_negative(&path(&field, "price"), &model.price)?,
            })
        }
        Some(Model::Graduated(model)) => {
            let field = path(field, "graduated");
            if model.tiers.is_empty() || model.tiers.len() > TIERS_MAX {
                return Err(InvalidInput::new(
                    path(&field, "tiers"),
                    format!("must have 1..={TIERS_MAX} tiers, got {}", model.tiers.len()),
                ));
            }
            let mut tiers = Vec::with_capacity(model.tiers.len());
            let mut previous_up_to: Option<Amount> = None;
            for (index, tier) in model.tiers.iter().enumerate() {
                let tier_field = format!("{field}.tiers[{index}]");
                let last = index + 1 == model.tiers.len();
                let up_to = match (&tier.up_to, last) {
                    (None, true) => None,
                    (None, false) => {
                        return Err(InvalidInput::new(
                            path(&tier_field, "up_to"),
                            "only the last tier may be open-ended",
                        ))
                    }
                    (Some(_), true) => {
                        return Err(InvalidInput::new(
                            path(&tier_field, "up_to"),
                            "the last tier must be open-ended (no up_to)",
                        ))
                    }
                    (Some(text), false) => {
                        let up_to = amount_positive(&path(&tier_field, "up_to"), text)?;
                        if let Some(previous) = previous_up_to {
                            if up_to <= previous {
                                return Err(InvalidInput::new(
                                    path(&tier_field, "up_to"),
                                    format!("must be above the previous tier's up_to ({previous}), got {up_to}"),
                                ));
                            }
                        }
                        previous_up_to = Some(up_to);
                        Some(up_to)
                    }
                };
                tiers.push(Tier {
                    up_to,
                    unit_price: amount_non_negative(
                        &path(&tier_field, "unit_price"),
                        &tier.unit_price,
                    )?,
                });
            }
            Ok(RateModel::Graduated {
                tiers,
                per: per(&path(&field, "per"), &model.per)?,
            })
        }
        Some(Model::Flat(model)) => Ok(RateModel::Flat {
            amount: amount_non_negative(&path(field, "flat.amount"), &model.amount)?,
        }),
    }
}

fn rates(wire: &[v1::Rate]) -> Result<Vec<Rate>, InvalidInput> {
    if wire.is_empty() || wire.len() > RATES_MAX {
        return Err(InvalidInput::new(
            "rates",
            format!("must have 1..={RATES_MAX} rates, got {}", wire.len()),
        ));
    }
    wire.iter()
        .enumerate()
        .map(|(index, rate)| {
            let field = format!("rates[{index}]");
            Ok(Rate {
                meter: Meter::parse_as("meter", rate.meter.as_str())
                    .map_err(|e| e.within(&field))?,
                dimensions: pairs(&path(&field, "dimensions"), &rate.dimensions)?,
                model: rate_model(&field, rate.model.as_ref())?,
            })
        })
        .collect()
}

impl ToCommand for v1::PublishPricesRequest {
    fn to_command(&self) -> Result<Command, TallyError> {
        if self.rates.len() > RATES_MAX {
            return Err(TallyError::request_too_large(format!(
                "rates: {} rates; at most {RATES_MAX} per version",
                self.rates.len()
            )));
        }
        Ok(Command::PublishPrices(PriceBookVersionSpec {
            book: BookId::parse_as("book", self.book.as_str())?,
            asset: AssetCode::parse_as("asset", self.asset.as_str())?,
            effective_from: self.effective_from_ms,
            rates: rates(&self.rates)?,
        }))
    }
}

impl ToCommand for v1::PublishCostsRequest {
    fn to_command(&self) -> Result<Command, TallyError> {
        if self.rates.len() > RATES_MAX {
            return Err(TallyError::request_too_large(format!(
                "rates: {} rates; at most {RATES_MAX} per version",
                self.rates.len()
            )));
        }
        Ok(Command::PublishCosts(CostBookVersionSpec {
            effective_from: self.effective_from_ms,
            rates: rates(&self.rates)?,
        }))
    }
}

/// A usage event's fields as the client sent them, borrowed from prost's message or straight
/// from a request's bytes (`crate::ingest`): both convert through [`usage_event_of`], so they
/// check alike and fail alike.
pub(crate) struct UsageEventText<'a> {
    pub event_id: &'a str,
    pub account: &'a str,
    pub meter: &'a str,
    pub quantity: &'a str,
    pub occurred_at_ms: u64,
    pub cost: Option<&'a str>,
    pub hold_id: Option<&'a str>,
}

/// One usage event. Errors name the field within the event (`quantity`); the caller prefixes
/// the event's own path (`event`, `events[3]`) only when there is an error, because this runs
/// for every event of every batch. `seen` shares the meter and keys across a batch's events.
pub(crate) fn usage_event(
    wire: &v1::UsageEvent,
    seen: &mut Seen,
) -> Result<UsageEvent, InvalidInput> {
    let text = UsageEventText {
        event_id: &wire.event_id,
        account: &wire.account,
        meter: &wire.meter,
        quantity: &wire.quantity,
        occurred_at_ms: wire.occurred_at_ms,
        cost: wire.cost.as_deref(),
        hold_id: wire.hold_id.as_deref(),
    };
    usage_event_of(
        &text,
        |seen| dimensions_seen("dimensions", key_values(&wire.dimensions), seen),
        seen,
    )
}

/// [`usage_event`] from the event's text; `dimensions` makes its dimensions (from their
/// (key, value) text with [`dimensions_seen`], or a list made from the same bytes before),
/// in the place of the field order where they are checked.
pub(crate) fn usage_event_of(
    text: &UsageEventText<'_>,
    dimensions: impl FnOnce(&mut Seen) -> Result<Dimensions, InvalidInput>,
    seen: &mut Seen,
) -> Result<UsageEvent, InvalidInput> {
    Ok(UsageEvent {
        event_id: EventId::parse_as("event_id", text.event_id)?,
        account: AccountId::parse_as("account", text.account)?,
        meter: seen.meter(text.meter)?,
        quantity: quantity("quantity", text.quantity)?,
        dimensions: dimensions(seen)?,
        occurred_at: required_time_ms("occurred_at_ms", text.occurred_at_ms)?,
        cost: text.cost.map(|cost| quantity("cost", cost)).transpose()?,
        hold: text
            .hold_id
            .map(|hold| HoldId::parse_as("hold_id", hold))
            .transpose()?,
    })
}

/// An event's quantity (or the cost it carries), with the bounds that need no ledger state
/// checked here (at most 18 decimals and 10^15, as the ledger checks them again), so such an
/// event is refused before it reaches the log.
fn quantity(field: &str, text: &str) -> Result<tally_core::Amount, InvalidInput> {
    let quantity = amount_non_negative(field, text)?;
    tally_core::validate::check_amount(field, quantity, false, tally_core::money::SCALE_MAX)?;
    Ok(quantity)
}

impl ToCommand for v1::RecordUsageRequest {
    fn to_command(&self) -> Result<Command, TallyError> {
        let event = self
            .event
            .as_ref()
            .ok_or_else(|| InvalidInput::new("event", "is required"))?;
        Ok(Command::Usage(
            usage_event(event, &mut Seen::default()).map_err(|e| e.within("event"))?,
        ))
    }
}

/// The checks one event of a batch gets, alone: what a client runs before it buffers an
/// event, so one bad event is refused by itself (its field named) instead of its whole batch.
pub fn check_usage_event(event: &v1::UsageEvent) -> Result<(), TallyError> {
    usage_event(event, &mut Seen::default())?;
    Ok(())
}

/// A batch holds 1 to [`BATCH_EVENTS_MAX`] events; checked before any event is converted.
pub(crate) fn check_batch_len(events: usize) -> Result<(), TallyError> {
    if events > BATCH_EVENTS_MAX {
        return Err(TallyError::request_too_large(format!(
            "events: the batch holds {events} events; at most {BATCH_EVENTS_MAX} allowed"
        ))
        .with_detail("field", "events")
        .with_detail("limit", BATCH_EVENTS_MAX.to_string()));
    }
    if events == 0 {
        return Err(InvalidInput::new("events", "must hold at least 1 event").into());
    }
    Ok(())
}

/// `reply` must be a `BatchReply` value: an unknown one is refused, not read as the default.
pub(crate) fn check_batch_reply(reply: i32) -> Result<(), TallyError> {
    match v1::BatchReply::try_from(reply) {
        Ok(_) => Ok(()),
        Err(_) => Err(InvalidInput::new(
            "reply",
            format!(
                "must be BATCH_REPLY_EVERY_RESULT (0) or BATCH_REPLY_UNSETTLED_ONLY (1), got {reply}"
            ),
        )
        .into()),
    }
}

impl ToCommand for v1::RecordUsageBatchRequest {
    fn to_command(&self) -> Result<Command, TallyError> {
        check_batch_len(self.events.len())?;
        check_batch_reply(self.reply)?;
        // Filled in place: collecting into a `Result` would grow (and copy) the list as it
        // goes, not knowing its length.
        let mut events = Vec::with_capacity(self.events.len());
        let mut seen = Seen::default();
        for (index, event) in self.events.iter().enumerate() {
            events.push(
                usage_event(event, &mut seen).map_err(|e| e.within(&format!("events[{index}]")))?,
            );
        }
        Ok(Command::UsageBatch {
            events,
            atomic: self.atomic,
        })
    }
}

impl ToCommand for v1::AuthorizeRequest {
    fn to_command(&self) -> Result<Command, TallyError> {
        let account = AccountId::parse_as("account", self.account.as_str())?;
        let id = HoldId::parse_as("hold_id", self.hold_id.as_str())?;
        let amount = amount_positive("amount", &self.amount)?;
        if !(HOLD_EXPIRES_IN_MS_MIN..=HOLD_EXPIRES_IN_MS_MAX).contains(&self.expires_in_ms) {
            return Err(InvalidInput::new(
                "expires_in_ms",
                format!(
                    "must be {HOLD_EXPIRES_IN_MS_MIN}..={HOLD_EXPIRES_IN_MS_MAX} (1 s .. 24 h), got {}",
                    self.expires_in_ms
                ),
            )
            .into());
        }
        Ok(Command::Authorize(HoldSpec {
            account,
            id,
            amount,
            expires_in_ms: self.expires_in_ms,
        }))
    }
}

impl ToCommand for v1::ReleaseRequest {
    fn to_command(&self) -> Result<Command, TallyError> {
        Ok(Command::Release {
            account: AccountId::parse_as("account", self.account.as_str())?,
            hold: HoldId::parse_as("hold_id", self.hold_id.as_str())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn kv(key: &str, value: &str) -> v1::KeyValue {
        v1::KeyValue {
            key: key.to_string(),
            value: value.to_string(),
        }
    }

    fn event(id: &str) -> v1::UsageEvent {
        v1::UsageEvent {
            event_id: id.to_string(),
            account: "acme".to_string(),
            meter: "tokens".to_string(),
            quantity: "1500".to_string(),
            dimensions: vec![kv("region", "eu"), kv("model", "m1")],
            occurred_at_ms: 1_700_000_000_000,
            cost: Some("0.002".to_string()),
            hold_id: None,
        }
    }

    fn message(result: Result<Command, TallyError>) -> String {
        let error = result.unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidArgument, "{error}");
        error.message
    }

    #[test]
    fn usage_event_converts_with_sorted_dimensions() {
        let command = v1::RecordUsageRequest {
            event: Some(event("e1")),
        }
        .to_command()
        .unwrap();
        let Command::Usage(usage) = command else {
            panic!("{command:?}")
        };
        assert_eq!(usage.event_id.as_str(), "e1");
        assert_eq!(usage.quantity, Amount::from_i64(1500));
        assert_eq!(usage.dimensions[0].0.as_str(), "model");
        assert_eq!(usage.dimensions[1].0.as_str(), "region");
        assert_eq!(usage.cost, Some(Amount::parse("c", "0.002").unwrap()));
        assert_eq!(usage.hold, None);
    }

    /// A batch of `events` after `spoil` (atomic when asked).
    fn spoiled(
        events: &[v1::UsageEvent],
        atomic: bool,
        spoil: impl FnOnce(&mut Vec<v1::UsageEvent>),
    ) -> v1::RecordUsageBatchRequest {
        let mut events = events.to_vec();
        spoil(&mut events);
        v1::RecordUsageBatchRequest {
            events,
            atomic,
            ..Default::default()
        }
    }

    #[test]
    fn batch_errors_name_the_event_and_field() {
        let events: Vec<_> = (0..5).map(|i| event(&format!("e{i}"))).collect();
        let request = spoiled(&events, false, |bad| {
            bad[3].quantity = "-1".to_string();
        });
        assert_eq!(
            message(request.to_command()),
            "events[3].quantity: must be >= 0, got -1"
        );

        // A carried cost past 10^15 is refused here, as a quantity is (it needs no ledger
        // state), not left to come back as a rejected outcome.
        let request = spoiled(&events, false, |bad| {
            bad[1].cost = Some("1000000000000001".to_string());
        });
        assert_eq!(
            message(request.to_command()),
            "events[1].cost: 1000000000000001 exceeds the limit of 10^15"
        );

        let request = spoiled(&events, true, |bad| {
            bad[2].account = String::new();
        });
        assert_eq!(
            message(request.to_command()),
            "events[2].account: must not be empty"
        );

        let request = spoiled(&events, false, |bad| {
            bad[1].dimensions.push(kv("model", "m2"));
        });
        let text = message(request.to_command());
        assert!(
            text.starts_with("events[1].dimensions: key \"model\" appears more than once"),
            "{text}"
        );

        let request = spoiled(&events, false, |bad| {
            bad[4].occurred_at_ms = 0;
        });
        let text = message(request.to_command());
        assert!(
            text.starts_with("events[4].occurred_at_ms: must be set"),
            "{text}"
        );

        let request = spoiled(&events, false, |bad| {
            bad[0].hold_id = Some("h 1".to_string());
        });
        assert!(message(request.to_command()).starts_with("events[0].hold_id: contains ' '"));

        // Names shared across a batch's events: a later event's bad meter or key (after good
        // ones) still fails with its own path, and a different good meter is its own.
        let request = spoiled(&events, false, |bad| {
            bad[2].meter = "tok ens".to_string();
        });
        assert_eq!(
            message(request.to_command()),
            "events[2].meter: contains ' '; allowed characters are A-Z, a-z, 0-9 and _ . : @ -"
        );
        let request = spoiled(&events, false, |bad| {
            bad[3].dimensions[1].key = "reg/ion".to_string();
        });
        assert!(
            message(request.to_command()).starts_with("events[3].dimensions[1].key: contains '/'")
        );
        let mut mixed = events.clone();
        mixed[1].meter = "requests".to_string();
        mixed[2].dimensions[0].key = "zone".to_string();
        let Command::UsageBatch {
            events: converted, ..
        } = v1::RecordUsageBatchRequest {
            events: mixed,
            atomic: false,
            ..Default::default()
        }
        .to_command()
        .unwrap()
        else {
            panic!("not a batch")
        };
        let meters: Vec<&str> = converted.iter().map(|e| e.meter.as_str()).collect();
        assert_eq!(meters, ["tokens", "requests", "tokens", "tokens", "tokens"]);
        let keys: Vec<&str> = converted[2]
            .dimensions
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys, ["model", "zone"]);
        assert_eq!(converted[3].dimensions, converted[0].dimensions);
        let values: Vec<&str> = converted[2]
            .dimensions
            .iter()
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(values, ["m1", "eu"]);

        let request = spoiled(&events, false, |bad| {
            bad[1].dimensions[0].value = "e\u{7f}u".to_string();
        });
        assert_eq!(
            message(request.to_command()),
            "events[1].dimensions[0].value: must not contain control characters"
        );

        let request = spoiled(&events, false, |bad| {
            bad[0].quantity = "1e3".to_string();
        });
        assert!(message(request.to_command())
            .starts_with("events[0].quantity: must be a plain decimal"));
    }

    /// Found by an audit: an unknown `reply` was read as the default, the quantity's
    /// stateless bounds were left to the ledger (after the log), a non-ASCII character was
    /// named by one of its bytes, and text that is not a number was told about digits.
    #[test]
    fn edge_checks_refuse_before_the_log_and_name_what_is_wrong() {
        let batch = |reply: i32| v1::RecordUsageBatchRequest {
            events: vec![event("e1")],
            atomic: false,
            reply,
        };
        for reply in [2, 7, -1] {
            let through_prost = message(batch(reply).to_command());
            assert!(
                through_prost.contains("reply") && through_prost.contains(&reply.to_string()),
                "{through_prost}"
            );
            let wire = crate::ingest::RecordUsageBatchWire::from(&batch(reply));
            assert_eq!(message(wire.to_command()), through_prost);
        }
        for reply in [0, 1] {
            assert!(batch(reply).to_command().is_ok());
        }
        for (quantity, reason) in [
            ("0.0000000000000000001", "decimal places"),
            ("10000000000000000", "exceeds the limit"),
            ("1.00000000000000000000000000001", "more digits"),
            ("abc", "must be a decimal number"),
        ] {
            let mut bad = event("e1");
            bad.quantity = quantity.to_string();
            let text = message(v1::RecordUsageRequest { event: Some(bad) }.to_command());
            assert!(
                text.contains("quantity") && text.contains(reason),
                "{quantity}: {text}"
            );
            assert!(!text.contains("significant digits") || reason == "more digits");
        }
        let mut accented = event("e1");
        accented.account = "café".to_string();
        let text = message(
            v1::RecordUsageRequest {
                event: Some(accented),
            }
            .to_command(),
        );
        assert!(text.contains("account") && text.contains("'é'"), "{text}");
    }

    #[test]
    fn batch_limits() {
        let request = v1::RecordUsageBatchRequest {
            events: vec![],
            atomic: false,
            ..Default::default()
        };
        assert_eq!(
            message(request.to_command()),
            "events: must hold at least 1 event"
        );

        let events = vec![event("e"); BATCH_EVENTS_MAX + 1];
        let error = v1::RecordUsageBatchRequest {
            events,
            atomic: false,
            ..Default::default()
        }
        .to_command()
        .unwrap_err();
        assert_eq!(error.code, ErrorCode::RequestTooLarge);
        assert!(
            error.message.contains("8191 events; at most 8190"),
            "{}",
            error.message
        );

        let events: Vec<_> = (0..BATCH_EVENTS_MAX)
            .map(|i| event(&format!("e{i}")))
            .collect();
        let command = v1::RecordUsageBatchRequest {
            events,
            atomic: true,
            ..Default::default()
        }
        .to_command()
        .unwrap();
        let Command::UsageBatch { events, atomic } = command else {
            panic!()
        };
        assert_eq!(events.len(), BATCH_EVENTS_MAX);
        assert!(atomic);
    }

    #[test]
    fn single_event_paths_and_missing_event() {
        let mut wire = event("e");
        wire.event_id = "x".repeat(129);
        let text = message(v1::RecordUsageRequest { event: Some(wire) }.to_command());
        assert_eq!(
            text,
            "event.event_id: is 129 bytes long; at most 128 allowed"
        );
        assert_eq!(
            message(v1::RecordUsageRequest { event: None }.to_command()),
            "event: is required"
        );
    }

    #[test]
    fn asset_and_account_validation() {
        let ok = v1::CreateAssetRequest {
            code: "USD".into(),
            scale: 2,
        }
        .to_command()
        .unwrap();
        assert!(matches!(
            ok,
            Command::CreateAsset(AssetSpec { scale: 2, .. })
        ));
        let text = message(
            v1::CreateAssetRequest {
                code: "usd".into(),
                scale: 2,
            }
            .to_command(),
        );
        assert!(text.starts_with("code: contains 'u'"), "{text}");
        let text = message(
            v1::CreateAssetRequest {
                code: "USD".into(),
                scale: 19,
            }
            .to_command(),
        );
        assert_eq!(text, "scale: must be 0..=18, got 19");

        let mut account = v1::CreateAccountRequest {
            id: "acme".into(),
            asset: "USD".into(),
            credit_limit: Some("-5".into()),
            ..Default::default()
        };
        assert_eq!(
            message(account.to_command()),
            "credit_limit: must be >= 0, got -5"
        );
        account.credit_limit = Some("5".into());
        account.thresholds = vec!["10".into(), "abc".into()];
        assert!(message(account.to_command()).starts_with("thresholds[1]: must be a decimal"));
        account.thresholds = vec!["10".into()];
        account.auto_recharge = Some(v1::AutoRecharge {
            below: "5".into(),
            amount: "0".into(),
        });
        assert_eq!(
            message(account.to_command()),
            "auto_recharge.amount: must be > 0, got 0"
        );
        account.auto_recharge = None;
        account.metadata = vec![kv("plan", "pro"), kv("owner", "ops")];
        let Command::CreateAccount(spec) = account.to_command().unwrap() else {
            panic!()
        };
        assert_eq!(spec.metadata[0].0.as_str(), "owner");
        assert_eq!(spec.credit_limit, Some(Amount::from_i64(5)));

        let status = v1::SetAccountStatusRequest {
            account: "acme".into(),
            status: 0,
        };
        assert!(message(status.to_command()).starts_with("status: must be set"));
        let status = v1::SetAccountStatusRequest {
            account: "acme".into(),
            status: 9,
        };
        assert!(message(status.to_command()).starts_with("status: unknown value 9"));
        let status = v1::SetAccountStatusRequest {
            account: "acme".into(),
            status: v1::AccountStatus::Frozen as i32,
        };
        assert!(matches!(
            status.to_command().unwrap(),
            Command::SetAccountStatus {
                status: AccountStatus::Frozen,
                ..
            }
        ));
    }

    #[test]
    fn update_account_distinguishes_unchanged_from_cleared() {
        use v1::update_account_request::{AutoRechargeChange, PriceBookChange};
        let update = v1::UpdateAccountRequest {
            account: "acme".into(),
            ..Default::default()
        };
        let Command::UpdateAccount(change) = update.to_command().unwrap() else {
            panic!()
        };
        assert_eq!(change.price_book, None);
        assert_eq!(change.metadata, None);

        let update = v1::UpdateAccountRequest {
            account: "acme".into(),
            price_book_change: Some(PriceBookChange::ClearPriceBook(true)),
            auto_recharge_change: Some(AutoRechargeChange::ClearAutoRecharge(true)),
            metadata: Some(v1::KeyValueList { pairs: vec![] }),
            ..Default::default()
        };
        let Command::UpdateAccount(change) = update.to_command().unwrap() else {
            panic!()
        };
        assert_eq!(change.price_book, Some(None));
        assert_eq!(change.auto_recharge, Some(None));
        assert_eq!(change.metadata, Some(vec![]));

        let update = v1::UpdateAccountRequest {
            account: "acme".into(),
            thresholds: Some(v1::AmountList {
                amounts: vec!["x".into()],
            }),
            ..Default::default()
        };
        assert!(
            message(update.to_command()).starts_with("thresholds.amounts[0]: must be a decimal")
        );
    }

    #[test]
    fn grant_validation() {
        let grant = v1::AddGrantRequest {
            account: "acme".into(),
            grant_id: "g1".into(),
            category: v1::GrantCategory::Allowance as i32,
            amount: "10000".into(),
            reset_every: v1::ResetPeriod::Month as i32,
            ..Default::default()
        };
        let Command::AddGrant(spec) = grant.to_command().unwrap() else {
            panic!()
        };
        assert_eq!(spec.reset_every, Some(ResetPeriod::Month));
        assert_eq!(spec.priority, None);

        let purchased = v1::AddGrantRequest {
            category: v1::GrantCategory::Purchased as i32,
            reset_every: 0,
            ..grant.clone()
        };
        assert_eq!(
            message(purchased.to_command()),
            "paid: is required for a purchased grant"
        );
        let promotional = v1::AddGrantRequest {
            category: v1::GrantCategory::Promotional as i32,
            reset_every: 0,
            paid: Some("3".into()),
            ..grant.clone()
        };
        assert!(message(promotional.to_command()).starts_with("paid: must be 0 or absent"));
        let bad = v1::AddGrantRequest {
            amount: "0".into(),
            ..grant.clone()
        };
        assert_eq!(message(bad.to_command()), "amount: must be > 0, got 0");
        let bad = v1::AddGrantRequest {
            priority: Some(101),
            ..grant.clone()
        };
        assert_eq!(
            message(bad.to_command()),
            "priority: must be 0..=100, got 101"
        );
        let bad = v1::AddGrantRequest {
            category: 0,
            ..grant.clone()
        };
        assert!(message(bad.to_command()).starts_with("category: must be set"));
        let bad = v1::AddGrantRequest {
            starts_at_ms: Some(10),
            expires_at_ms: Some(10),
            ..grant.clone()
        };
        assert!(message(bad.to_command()).starts_with("expires_at_ms: must be after"));
        let bad = v1::AddGrantRequest {
            reset_every: 7,
            ..grant
        };
        assert!(message(bad.to_command()).starts_with("reset_every: unknown value 7"));

        let void = v1::VoidGrantRequest {
            account: "acme".into(),
            grant_id: "g1".into(),
            reason: " ".into(),
        };
        assert!(message(void.to_command()).starts_with("reason: must say why"));
    }

    #[test]
    fn rate_validation() {
        use v1::rate::Model;
        let rate = |model| v1::Rate {
            meter: "tokens".into(),
            dimensions: vec![kv("model", "m1")],
            model: Some(model),
        };
        let publish = |rates| v1::PublishPricesRequest {
            book: "standard".into(),
            asset: "CREDITS".into(),
            effective_from_ms: None,
            rates,
        };
        let ok = publish(vec![
            rate(Model::PerUnit(v1::PerUnit {
                unit_price: "0.002".into(),
                per: String::new(),
            })),
            rate(Model::Graduated(v1::Graduated {
                tiers: vec![
                    v1::Tier {
                        up_to: Some("1000".into()),
                        unit_price: "0.01".into(),
                    },
                    v1::Tier {
                        up_to: None,
                        unit_price: "0.005".into(),
                    },
                ],
                per: "1".into(),
            })),
        ]);
        let Command::PublishPrices(spec) = ok.to_command().unwrap() else {
            panic!()
        };
        assert_eq!(
            spec.rates[0].model,
            RateModel::PerUnit {
                unit_price: Amount::parse("p", "0.002").unwrap(),
                per: Amount::ONE
            }
        );

        let text = message(publish(vec![]).to_command());
        assert_eq!(text, "rates: must have 1..=1024 rates, got 0");
        let no_model = v1::Rate {
            meter: "tokens".into(),
            dimensions: vec![],
            model: None,
        };
        assert!(message(publish(vec![no_model]).to_command())
            .starts_with("rates[0].model: must be one of"));
        let bad_tiers = rate(Model::Graduated(v1::Graduated {
            tiers: vec![
                v1::Tier {
                    up_to: Some("1000".into()),
                    unit_price: "0.01".into(),
                },
                v1::Tier {
                    up_to: Some("500".into()),
                    unit_price: "0.01".into(),
                },
                v1::Tier {
                    up_to: None,
                    unit_price: "0.005".into(),
                },
            ],
            per: "1".into(),
        }));
        let text = message(publish(vec![bad_tiers]).to_command());
        assert!(
            text.starts_with("rates[0].graduated.tiers[1].up_to: must be above"),
            "{text}"
        );
        let bad_package = rate(Model::Package(v1::Package {
            size: "0".into(),
            price: "1".into(),
        }));
        let text = message(publish(vec![bad_package]).to_command());
        assert_eq!(text, "rates[0].package.size: must be > 0, got 0");
        let bad_meter = v1::Rate {
            meter: "a/b".into(),
            ..rate(Model::Flat(v1::Flat { amount: "1".into() }))
        };
        assert!(message(publish(vec![bad_meter]).to_command())
            .starts_with("rates[0].meter: contains '/'"));
    }

    #[test]
    fn hold_validation() {
        let hold = v1::AuthorizeRequest {
            account: "acme".into(),
            hold_id: "h1".into(),
            amount: "25".into(),
            expires_in_ms: 999,
        };
        assert!(message(hold.to_command()).starts_with("expires_in_ms: must be 1000..=86400000"));
        let hold = v1::AuthorizeRequest {
            expires_in_ms: 60_000,
            ..hold
        };
        assert!(matches!(hold.to_command().unwrap(), Command::Authorize(_)));
        let release = v1::ReleaseRequest {
            account: "acme".into(),
            hold_id: String::new(),
        };
        assert_eq!(message(release.to_command()), "hold_id: must not be empty");
    }
}
