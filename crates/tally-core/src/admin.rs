//! Handlers for every command but usage: assets, accounts, grants, price and cost books, holds.
//! Each validates everything before it changes anything, so a rejection changes nothing.

use crate::account::{nonzero_time, Account, Grant, GrantEnd, Hold, HoldEnd};
use crate::calendar::month_of;
use crate::command::{
    AccountSpec, AccountStatus, AccountUpdate, AssetSpec, AutoRecharge, CostBookVersionSpec,
    GrantCategory, GrantSpec, HoldSpec, PriceBookVersionSpec, HOLD_EXPIRES_IN_MS_MAX,
    HOLD_EXPIRES_IN_MS_MIN, PAIRS_MAX, PAIR_VALUE_LEN_MAX, REASON_LEN_MAX, THRESHOLDS_MAX,
};
use crate::effects::Out;
use crate::error::InvalidInput;
use crate::ids::{AccountId, AssetCode, BookId, GrantId, HoldId, Key};
use crate::journal::{Book, JournalKind};
use crate::money::{Amount, SCALE_MAX};
use crate::outcome::{Applied, Reason};
use crate::pricing::{index_rates, PriceBook, PriceVersion};
use crate::report::{category_index, minus, plus};
use crate::state::{reschedule, ApplyResult, LedgerState};
use crate::validate::{check_amount, check_asset_amount, check_asset_magnitude, check_pairs};

pub(crate) fn check_scale(field: &str, scale: u32) -> Result<(), InvalidInput> {
    if scale > SCALE_MAX {
        return Err(InvalidInput::new(
            field,
            format!("must be 0..={SCALE_MAX}, got {scale}"),
        ));
    }
    Ok(())
}

fn check_thresholds(thresholds: &[Amount], scale: u32) -> Result<Vec<Amount>, InvalidInput> {
    if thresholds.len() > THRESHOLDS_MAX {
        return Err(InvalidInput::new(
            "thresholds",
            format!(
                "has {} entries; at most {THRESHOLDS_MAX} allowed",
                thresholds.len()
            ),
        ));
    }
    for (index, threshold) in thresholds.iter().enumerate() {
        check_asset_magnitude(&format!("thresholds[{index}]"), *threshold, scale)?;
    }
    let mut sorted = thresholds.to_vec();
    sorted.sort();
    sorted.dedup();
    Ok(sorted)
}

fn check_auto_recharge(rule: &AutoRecharge, scale: u32) -> Result<(), InvalidInput> {
    check_asset_magnitude("auto_recharge.below", rule.below, scale)?;
    check_asset_amount("auto_recharge.amount", rule.amount, true, scale)
}

/// An account in the reporting currency is worth its own amount: revenue on its debt is the
/// debt itself, so its list price can only be 1.
fn check_reporting_list_price(asset: &AssetCode, list_price: Amount) -> Result<(), InvalidInput> {
    if list_price != Amount::ONE {
        return Err(InvalidInput::new(
            "list_price",
            format!(
                "must be 1 for an account in the reporting currency {asset} (one unit is worth one unit), got {list_price}"
            ),
        ));
    }
    Ok(())
}

fn check_metadata(metadata: &[(Key, String)]) -> Result<(), InvalidInput> {
    check_pairs("metadata", metadata, PAIRS_MAX, PAIR_VALUE_LEN_MAX)
}

impl LedgerState {
    fn reporting_scale(&self) -> u32 {
        self.params().reporting_scale
    }

    fn reporting_currency(&self) -> &AssetCode {
        &self
            .config
            .as_ref()
            .expect("handlers run only once initialized")
            .reporting_currency
    }

    /// The ledger's own copy of an asset code known to exist (checked before).
    fn interned_asset(&self, code: &AssetCode) -> AssetCode {
        self.assets
            .get_key_value(code)
            .map_or_else(|| code.clone(), |(code, _)| code.clone())
    }

    /// The ordinal of a price book known to exist (checked before).
    fn book_ordinal(&self, book: &BookId) -> u32 {
        self.price_books
            .get(book)
            .expect("the price book was checked")
            .ordinal
    }

    fn asset_scale(&self, code: &AssetCode) -> Result<u32, Reason> {
        self.assets
            .get(code)
            .copied()
            .ok_or_else(|| Reason::UnknownAsset {
                asset: code.to_string(),
            })
    }

    /// The account, or why it cannot be changed.
    fn open_account(&self, id: &AccountId) -> Result<&Account, Reason> {
        let account = self.known_account(id)?;
        check_not_closed(id, account)?;
        Ok(account)
    }

    /// The account, whatever its status (a retry is recognised before the status is checked).
    fn known_account(&self, id: &AccountId) -> Result<&Account, Reason> {
        self.accounts.get(id).ok_or_else(|| Reason::UnknownAccount {
            account: id.clone(),
        })
    }

    fn check_price_book(&self, book: &BookId, asset: &AssetCode) -> Result<(), Reason> {
        let price_book = self
            .price_books
            .get(book)
            .ok_or_else(|| Reason::UnknownPriceBook { book: book.clone() })?;
        if &price_book.asset != asset {
            return Err(InvalidInput::new(
                "price_book",
                format!(
                    "book {book} prices in {}, but the account is in {asset}",
                    price_book.asset
                ),
            )
            .into());
        }
        Ok(())
    }

    pub(crate) fn create_asset(&mut self, spec: &AssetSpec) -> Result<Applied, Reason> {
        check_scale("scale", spec.scale)?;
        if let Some(scale) = self.assets.get(&spec.code) {
            return if *scale == spec.scale {
                Ok(Applied::AlreadyApplied)
            } else {
                Err(Reason::AlreadyExists {
                    what: "asset".into(),
                    id: spec.code.to_string(),
                })
            };
        }
        self.assets.insert(spec.code.clone(), spec.scale);
        Ok(Applied::AssetCreated)
    }

    pub(crate) fn create_account(&mut self, spec: &AccountSpec) -> Result<Applied, Reason> {
        let scale = self.asset_scale(&spec.asset)?;
        if let Some(book) = &spec.price_book {
            self.check_price_book(book, &spec.asset)?;
        }
        let credit_limit = spec.credit_limit.unwrap_or(Amount::ZERO);
        check_asset_amount("credit_limit", credit_limit, false, scale)?;
        let is_reporting = &spec.asset == self.reporting_currency();
        let list_price = spec.list_price.unwrap_or(if is_reporting {
            Amount::ONE
        } else {
            Amount::ZERO
        });
        check_amount("list_price", list_price, false, SCALE_MAX)?;
        if is_reporting {
            check_reporting_list_price(&spec.asset, list_price)?;
        }
        check_metadata(&spec.metadata)?;
        let thresholds = check_thresholds(&spec.thresholds, scale)?;
        if let Some(rule) = &spec.auto_recharge {
            check_auto_recharge(rule, scale)?;
        }
        if let Some(existing) = self.accounts.get(&spec.id) {
            let same = existing.asset == spec.asset
                && existing
                    .price_book
                    .map(|book| &self.book_ids[book as usize])
                    == spec.price_book.as_ref()
                && existing.credit_limit() == credit_limit
                && existing.list_price() == list_price
                && existing.settings().metadata == spec.metadata
                && existing.settings().thresholds == thresholds
                && existing.settings().auto_recharge == spec.auto_recharge;
            return if same {
                Ok(Applied::AlreadyApplied)
            } else {
                Err(Reason::AlreadyExists {
                    what: "account".into(),
                    id: spec.id.to_string(),
                })
            };
        }
        let ordinal = self
            .accounts
            .next_ordinal()
            .ok_or_else(|| Reason::Overflow {
                field: "account count".into(),
            })?;
        // The asset code is shared with the ledger's own table rather than copied: one
        // allocation for every account, and one cache line hot for all of them.
        let asset = self.interned_asset(&spec.asset);
        let price_book = spec.price_book.as_ref().map(|book| self.book_ordinal(book));
        self.accounts.push(
            spec.id.clone(),
            Box::new({
                let mut account = Account::new(ordinal, asset, scale, is_reporting, price_book);
                account.update_credit(|credit| {
                    credit.credit_limit = credit_limit;
                    credit.list_price = list_price;
                });
                account
            }),
        );
        self.accounts
            .get_mut(&spec.id)
            .expect("inserted above")
            .set_settings(crate::account::AccountSettings {
                metadata: spec.metadata.clone(),
                thresholds,
                auto_recharge: spec.auto_recharge.clone(),
                low_thresholds: Vec::new(),
            });
        Ok(Applied::AccountCreated)
    }

    pub(crate) fn update_account(
        &mut self,
        update: &AccountUpdate,
        result: &mut ApplyResult,
    ) -> Result<Applied, Reason> {
        let account = self.open_account(&update.account)?;
        let (asset, scale) = (account.asset.clone(), account.scale);
        if let Some(Some(book)) = &update.price_book {
            self.check_price_book(book, &asset)?;
        }
        if let Some(limit) = update.credit_limit {
            check_asset_amount("credit_limit", limit, false, scale)?;
        }
        if let Some(price) = update.list_price {
            check_amount("list_price", price, false, SCALE_MAX)?;
            if &asset == self.reporting_currency() {
                check_reporting_list_price(&asset, price)?;
            }
        }
        if let Some(metadata) = &update.metadata {
            check_metadata(metadata)?;
        }
        let thresholds = match &update.thresholds {
            Some(list) => Some(check_thresholds(list, scale)?),
            None => None,
        };
        if let Some(Some(rule)) = &update.auto_recharge {
            check_auto_recharge(rule, scale)?;
        }
        self.touch(&update.account, result);
        let price_book = update
            .price_book
            .as_ref()
            .map(|book| book.as_ref().map(|book| self.book_ordinal(book)));
        let account = self.accounts.get_mut(&update.account).expect("checked");
        if let Some(book) = price_book {
            account.price_book = book;
        }
        account.update_credit(|credit| {
            if let Some(limit) = update.credit_limit {
                credit.credit_limit = limit;
            }
            if let Some(price) = update.list_price {
                credit.list_price = price;
            }
        });
        // A lower credit limit takes value away from what open holds may reserve.
        account.trim_holds();
        let mut settings = account.settings().clone();
        if let Some(metadata) = &update.metadata {
            settings.metadata = metadata.clone();
        }
        if let Some(thresholds) = thresholds {
            settings.low_thresholds.retain(|t| thresholds.contains(t));
            settings.thresholds = thresholds;
        }
        // A changed rule re-arms the request; the same rule sent again (a client saving the
        // whole account form) leaves a pending request pending, so it is not asked twice.
        if let Some(rule) = update
            .auto_recharge
            .as_ref()
            .filter(|rule| **rule != settings.auto_recharge)
        {
            settings.auto_recharge = rule.clone();
            account.recharge_pending = false;
        }
        account.set_settings(settings);
        Ok(Applied::AccountUpdated)
    }

    pub(crate) fn set_status(
        &mut self,
        id: &AccountId,
        status: AccountStatus,
        result: &mut ApplyResult,
    ) -> Result<Applied, Reason> {
        // Closing is final; closing again (a retried close) is a no-op, not an error.
        if status == AccountStatus::Closed
            && self
                .accounts
                .get(id)
                .is_some_and(|account| account.status == AccountStatus::Closed)
        {
            return Ok(Applied::AlreadyApplied);
        }
        self.open_account(id)?;
        self.touch(id, result);
        let now = self.now_ms;
        let params = self.params();
        let account = self.accounts.get_mut(id).expect("checked");
        account.status = status;
        if status == AccountStatus::Closed {
            // Nothing can be captured on a closed account: its holds end now, released, and
            // reserve nothing more.
            account.release_open_holds(now);
            reschedule(&mut self.due, account, params);
        }
        Ok(Applied::StatusChanged)
    }

    pub(crate) fn add_grant(
        &mut self,
        spec: &GrantSpec,
        result: &mut ApplyResult,
    ) -> Result<Applied, Reason> {
        let now = self.now_ms;
        let reporting_scale = self.reporting_scale();
        let account = self.known_account(&spec.account)?;
        let scale = account.scale;
        check_asset_amount("amount", spec.amount, true, scale)?;
        let priority = spec
            .priority
            .unwrap_or_else(|| spec.category.default_priority());
        if priority > 100 {
            return Err(
                InvalidInput::new("priority", format!("must be 0..=100, got {priority}")).into(),
            );
        }
        // Times are instants after the epoch's first and before year 10000 (resets add months
        // to them, which must not overflow); 0 is not "unset" here, it is refused.
        for (field, at) in [
            ("starts_at", spec.starts_at),
            ("expires_at", spec.expires_at),
        ] {
            if let Some(at) = at.filter(|at| *at == 0 || *at > TIME_MS_MAX) {
                return Err(InvalidInput::new(
                    field,
                    format!(
                        "must be a time after 1970-01-01T00:00:00Z and before year 10000, got {at} ms"
                    ),
                )
                .into());
            }
        }
        let starts_at = spec.starts_at.unwrap_or(now);
        if let (Some(expires_at), Some(starts_at)) = (spec.expires_at, spec.starts_at) {
            if expires_at <= starts_at {
                return Err(InvalidInput::new(
                    "expires_at",
                    format!(
                        "must be after starts_at ({}), got {}",
                        crate::calendar::format_utc(starts_at),
                        crate::calendar::format_utc(expires_at)
                    ),
                )
                .into());
            }
        }
        if spec.reset_every.is_some() && spec.category != GrantCategory::Allowance {
            return Err(InvalidInput::new("reset_every", "only allowances reset").into());
        }
        if let Some(rollover) = spec.rollover_max {
            if spec.reset_every.is_none() {
                return Err(InvalidInput::new(
                    "rollover_max",
                    "only applies to an allowance with reset_every",
                )
                .into());
            }
            check_asset_amount("rollover_max", rollover, false, scale)?;
        }
        let paid = match (spec.category, spec.paid) {
            (GrantCategory::Purchased, None) => {
                return Err(InvalidInput::new(
                    "paid",
                    "is required for a purchased grant (what the customer paid, in the reporting currency)",
                )
                .into())
            }
            (GrantCategory::Promotional, Some(paid)) if !paid.is_zero() => {
                return Err(InvalidInput::new("paid", "must be 0 for a promotional grant").into())
            }
            (_, paid) => paid.unwrap_or(Amount::ZERO),
        };
        check_asset_amount("paid", paid, false, reporting_scale)?;
        if let Some(index) = account.grant_index(&spec.id) {
            let existing = &account.grants[index];
            let same = existing.category == spec.category
                && existing.amount == spec.amount
                && existing.priority == priority
                && spec.starts_at.is_none_or(|at| at == existing.starts_at)
                && existing.expires_at() == spec.expires_at
                && existing.reset_every == spec.reset_every
                && existing.rollover_max() == spec.rollover_max
                && existing.paid == paid;
            return if same {
                Ok(Applied::AlreadyApplied)
            } else {
                Err(Reason::AlreadyExists {
                    what: "grant".into(),
                    id: spec.id.to_string(),
                })
            };
        }
        // After the retry above: a grant added once stays added when its retry comes after
        // the account's close.
        check_not_closed(&spec.account, account)?;
        // Revenue is booked as `units * paid / amount` for up to `amount + rollover_max` units:
        // that product must stay in range, or booking it later (at a draw, a reset, an
        // expiry) could not be done.
        let units_max = spec
            .amount
            .checked_add(spec.rollover_max.unwrap_or(Amount::ZERO));
        if units_max
            .and_then(|units| units.checked_mul(paid))
            .is_none()
        {
            return Err(Reason::Overflow {
                field: "paid".to_string(),
            });
        }
        // Checked after the retry above: a grant added once stays added when its retry comes
        // after the grant's expiry.
        if let Some(expires_at) = spec.expires_at {
            if expires_at <= now {
                return Err(InvalidInput::new(
                    "expires_at",
                    format!(
                        "must be after ledger time ({}), got {}",
                        crate::calendar::format_utc(now),
                        crate::calendar::format_utc(expires_at)
                    ),
                )
                .into());
            }
        }
        if account.grants.len() >= u32::MAX as usize {
            return Err(Reason::Overflow {
                field: "grant count".into(),
            });
        }

        self.touch(&spec.account, result);
        let params = self.params();
        let account = self.accounts.get_mut(&spec.account).expect("checked");
        let balance_before = account.balance();
        let mut grant = Grant {
            id: spec.id.clone(),
            category: spec.category,
            amount: spec.amount,
            remaining: spec.amount,
            priority,
            starts_at,
            started: starts_at <= now,
            expires_at: nonzero_time(spec.expires_at),
            reset_every: spec.reset_every,
            resets_done: 0,
            next_reset: None,
            rollover_max: spec.rollover_max.map(Box::new),
            paid,
            revenue_units: Amount::ZERO,
            ended: None,
        };
        // Resets are anchored at `starts_at`; for an allowance that started before now, the
        // boundaries already past belong to a time before the grant existed: none of them is
        // run (no refill, no breakage), the first reset is the next boundary after now.
        grant.resets_done = grant.resets_already_past(now);
        grant.next_reset = nonzero_time(grant.reset_boundary(grant.resets_done + 1));
        account.push_grant(grant);
        let index = account.grants.len() - 1;
        let source = if spec.category == GrantCategory::Promotional {
            Book::PromotionalExpense
        } else {
            Book::Funding
        };
        let mut out = Out {
            result,
            totals: &mut self.totals,
        };
        out.journal(
            now,
            &spec.account,
            account.ordinal,
            &account.asset.clone(),
            JournalKind::GrantAdded {
                grant: spec.id.clone(),
            },
            vec![
                (
                    Book::CustomerGrant {
                        account: spec.account.clone(),
                        grant: spec.id.clone(),
                    },
                    spec.amount,
                ),
                (source, -spec.amount),
            ],
            Amount::ZERO,
            Amount::ZERO,
        );
        let month = month_of(now);
        let category = category_index(spec.category);
        crate::report::book(
            &mut account.reports,
            &mut out.totals.reports,
            &account.asset,
            month,
            |report| report.granted[category] = plus(report.granted[category], spec.amount),
        );
        let debt_before = account.debt();
        account.repay_debt(&spec.account, index, now, &mut out);
        // Purchased value has arrived once the grant has started (a later start re-arms the
        // recharge request then, see `Account::run_due`).
        if spec.category == GrantCategory::Purchased && starts_at <= now {
            account.recharge_pending = false;
        }
        account.balance_events(&spec.account, balance_before, now, &mut out);
        let balance_after = account.balance();
        let debt_repaid = minus(debt_before, account.debt());
        reschedule(&mut self.due, account, params);
        Ok(Applied::GrantAdded {
            debt_repaid,
            balance_after,
        })
    }

    pub(crate) fn void_grant(
        &mut self,
        id: &AccountId,
        grant_id: &GrantId,
        reason: &str,
        result: &mut ApplyResult,
    ) -> Result<Applied, Reason> {
        if reason.trim().is_empty() {
            return Err(InvalidInput::new("reason", "must say why the grant is voided").into());
        }
        if reason.len() > REASON_LEN_MAX {
            return Err(InvalidInput::new(
                "reason",
                format!(
                    "is {} bytes; at most {REASON_LEN_MAX} allowed",
                    reason.len()
                ),
            )
            .into());
        }
        let account = self.known_account(id)?;
        let index = account
            .grant_index(grant_id)
            .ok_or_else(|| Reason::UnknownGrant {
                account: id.clone(),
                grant: grant_id.clone(),
            })?;
        // A closed account's grants may still be voided: that is how what a departed
        // customer paid for and did not use is refunded or written off (closing takes no
        // value away by itself), scheduled grants included, which would otherwise start later.
        self.touch(id, result);
        let now = self.now_ms;
        let params = self.params();
        let account = self.accounts.get_mut(id).expect("checked");
        if let Some(end) = account.grants[index].ended {
            return Ok(Applied::GrantEnded {
                ended_as: end.into(),
                balance_after: account.balance(),
            });
        }
        let balance_before = account.balance();
        let grant = &mut account.grants[index];
        let voided = grant.remaining;
        grant.remaining = Amount::ZERO;
        grant.ended = Some(GrantEnd::Voided);
        grant.next_reset = None;
        let source = if grant.category == GrantCategory::Promotional {
            Book::PromotionalExpense
        } else {
            Book::Funding
        };
        let mut out = Out {
            result,
            totals: &mut self.totals,
        };
        out.journal(
            now,
            id,
            account.ordinal,
            &account.asset.clone(),
            JournalKind::GrantVoided {
                grant: grant_id.clone(),
                reason: reason.to_string(),
            },
            vec![
                (
                    Book::CustomerGrant {
                        account: id.clone(),
                        grant: grant_id.clone(),
                    },
                    -voided,
                ),
                (source, voided),
            ],
            Amount::ZERO,
            Amount::ZERO,
        );
        account.balance_events(id, balance_before, now, &mut out);
        let balance_after = account.balance();
        reschedule(&mut self.due, account, params);
        Ok(Applied::GrantVoided {
            voided,
            balance_after,
        })
    }

    /// The version of `book` a publish of `rates` effective at `effective_from` already
    /// made (same time, same rates): a retried publish answers with it and changes nothing,
    /// even once that time has passed. Only with an explicit `effective_from`: without one a
    /// publish means "from now", and each is a new version.
    fn published_before(
        book: Option<&PriceBook>,
        effective_from: Option<u64>,
        rates: &[crate::command::Rate],
        scale_max: u32,
    ) -> Option<(u32, u64)> {
        let (book, effective_from) = (book?, effective_from?);
        let version = book
            .versions
            .iter()
            .rev()
            .find(|version| version.effective_from == effective_from)?;
        let rates = index_rates(rates, scale_max).ok()?;
        (version.rates == rates).then_some((version.version, effective_from))
    }

    fn new_version(
        &self,
        book: Option<&PriceBook>,
        effective_from: Option<u64>,
        rates: &[crate::command::Rate],
        scale_max: u32,
    ) -> Result<PriceVersion, Reason> {
        let now = self.now_ms;
        let effective_from = effective_from.unwrap_or(now);
        if effective_from < now {
            return Err(Reason::EffectiveInPast {
                effective_from,
                now,
            });
        }
        let rates = index_rates(rates, scale_max)?;
        let version = book.map_or(0, |b| b.versions.len()) as u32 + 1;
        Ok(PriceVersion {
            version,
            effective_from,
            rates,
        })
    }

    pub(crate) fn publish_prices(
        &mut self,
        spec: &PriceBookVersionSpec,
    ) -> Result<Applied, Reason> {
        let scale = self.asset_scale(&spec.asset)?;
        let existing = self.price_books.get(&spec.book);
        if let Some(book) = existing {
            if book.asset != spec.asset {
                return Err(InvalidInput::new(
                    "asset",
                    format!(
                        "price book {} prices in {}, not {}",
                        spec.book, book.asset, spec.asset
                    ),
                )
                .into());
            }
        }
        // Prices may be finer than the asset's scale (0.000002 per token); the debit is rounded.
        if let Some((version, effective_from)) = Self::published_before(
            existing,
            spec.effective_from,
            &spec.rates,
            SCALE_MAX.max(scale),
        ) {
            return Ok(Applied::PricesPublished {
                book: spec.book.clone(),
                version,
                effective_from,
            });
        }
        let version = self.new_version(
            existing,
            spec.effective_from,
            &spec.rates,
            SCALE_MAX.max(scale),
        )?;
        let applied = Applied::PricesPublished {
            book: spec.book.clone(),
            version: version.version,
            effective_from: version.effective_from,
        };
        if !self.price_books.contains_key(&spec.book) {
            let ordinal = self.book_ids.len() as u32;
            self.book_ids.push(spec.book.clone());
            self.price_books.insert(
                spec.book.clone(),
                PriceBook {
                    ordinal,
                    asset: spec.asset.clone(),
                    versions: Vec::new(),
                },
            );
        }
        self.price_books
            .get_mut(&spec.book)
            .expect("inserted above")
            .versions
            .push(version);
        Ok(applied)
    }

    pub(crate) fn publish_costs(&mut self, spec: &CostBookVersionSpec) -> Result<Applied, Reason> {
        if let Some((version, effective_from)) = Self::published_before(
            self.cost_book.as_ref(),
            spec.effective_from,
            &spec.rates,
            SCALE_MAX,
        ) {
            return Ok(Applied::CostsPublished {
                version,
                effective_from,
            });
        }
        let version = self.new_version(
            self.cost_book.as_ref(),
            spec.effective_from,
            &spec.rates,
            SCALE_MAX,
        )?;
        let applied = Applied::CostsPublished {
            version: version.version,
            effective_from: version.effective_from,
        };
        let asset = self.reporting_currency().clone();
        self.cost_book
            .get_or_insert_with(|| PriceBook {
                ordinal: 0,
                asset,
                versions: Vec::new(),
            })
            .versions
            .push(version);
        Ok(applied)
    }

    pub(crate) fn authorize(
        &mut self,
        spec: &HoldSpec,
        result: &mut ApplyResult,
    ) -> Result<Applied, Reason> {
        let account = self.known_account(&spec.account)?;
        check_asset_amount("amount", spec.amount, true, account.scale)?;
        if !(HOLD_EXPIRES_IN_MS_MIN..=HOLD_EXPIRES_IN_MS_MAX).contains(&spec.expires_in_ms) {
            return Err(InvalidInput::new(
                "expires_in_ms",
                format!(
                    "must be between 1 s and 24 h ({HOLD_EXPIRES_IN_MS_MIN}..={HOLD_EXPIRES_IN_MS_MAX} ms), got {}",
                    spec.expires_in_ms
                ),
            )
            .into());
        }
        // A retry of an authorize that went through is a no-op even if the account was frozen
        // or closed since: the hold exists. It answers the hold's expiry and what is available
        // now.
        if let Some(existing) = account.holds.get(&spec.id) {
            if existing.amount != spec.amount {
                return Err(Reason::AlreadyExists {
                    what: "hold".into(),
                    id: spec.id.to_string(),
                });
            }
            let expires_at = existing.expires_at;
            // What is available now: after the account's due transitions, as for a new hold.
            self.touch(&spec.account, result);
            let account = self.accounts.get(&spec.account).expect("checked");
            return Ok(Applied::HoldExisted {
                expires_at,
                available_after: account.available(),
            });
        }
        check_not_closed(&spec.account, account)?;
        if account.status == AccountStatus::Frozen {
            return Err(Reason::AccountFrozen {
                account: spec.account.clone(),
            });
        }
        self.touch(&spec.account, result);
        let now = self.now_ms;
        let params = self.params();
        let account = self.accounts.get_mut(&spec.account).expect("checked");
        let spendable = plus(account.available(), account.credit_limit());
        if spec.amount > spendable {
            return Err(Reason::InsufficientFunds {
                available: spendable,
                required: spec.amount,
            });
        }
        let expires_at = now.saturating_add(spec.expires_in_ms);
        account.holds.insert(
            spec.id.clone(),
            Hold {
                amount: spec.amount,
                remaining: spec.amount,
                captured: Amount::ZERO,
                expires_at,
                ended: None,
            },
        );
        let available_after = account.available();
        reschedule(&mut self.due, account, params);
        Ok(Applied::HoldAuthorized {
            expires_at,
            available_after,
        })
    }

    pub(crate) fn release(
        &mut self,
        id: &AccountId,
        hold_id: &HoldId,
        result: &mut ApplyResult,
    ) -> Result<Applied, Reason> {
        let account = self
            .accounts
            .get(id)
            .ok_or_else(|| Reason::UnknownAccount {
                account: id.clone(),
            })?;
        if !account.holds.contains_key(hold_id) {
            return Err(Reason::UnknownHold {
                account: id.clone(),
                hold: hold_id.clone(),
            });
        }
        self.touch(id, result);
        let now = self.now_ms;
        let params = self.params();
        let account = self.accounts.get_mut(id).expect("checked");
        let released = account.holds.update(hold_id, |hold| {
            if let Some(ended) = hold.ended {
                return Err(ended);
            }
            let released = hold.remaining;
            hold.remaining = Amount::ZERO;
            hold.ended = Some((HoldEnd::Released, now));
            Ok(released)
        });
        let released = match released {
            Some(Ok(released)) => released,
            // Ended before: say how and when.
            Some(Err((how, ended_at))) => {
                return Ok(Applied::HoldEnded {
                    ended_as: how.into(),
                    ended_at,
                    available_after: account.available(),
                })
            }
            // Forgotten by the transitions just run: it ended long ago.
            None => return Ok(Applied::AlreadyApplied),
        };
        let available_after = account.available();
        reschedule(&mut self.due, account, params);
        Ok(Applied::HoldReleased {
            released,
            available_after,
        })
    }
}

/// The latest time a grant may start or expire at: 9999-12-31T23:59:59.999Z.
pub const TIME_MS_MAX: u64 = 253_402_300_799_999;

/// Refuses a closed account (closing is final: it takes no grants, holds or usage).
fn check_not_closed(id: &AccountId, account: &Account) -> Result<(), Reason> {
    if account.status == AccountStatus::Closed {
        return Err(Reason::AccountClosed {
            account: id.clone(),
        });
    }
    Ok(())
}
