//! Monthly aggregates behind reports: per account and per (month, asset) ledger-wide.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::vecmap::VecMap;

use crate::command::GrantCategory;
use crate::ids::{AssetCode, Meter};
use crate::money::Amount;
use crate::view::{MeterReportView, Month, ReportView};

/// One account's figures for one month. Usage totals live only per meter (the account's totals
/// are their sum, computed when a report is read) so settling an event updates one small record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ReportAgg {
    /// Reporting currency.
    pub breakage: Amount,
    /// In the account's asset; indexed allowance, promotional, purchased.
    pub granted: [Amount; 3],
    pub meters: VecMap<Meter, MeterAgg>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MeterAgg {
    pub quantity: Amount,
    pub charged: Amount,
    pub revenue: Amount,
    pub cost: Amount,
    pub events: u64,
}

impl MeterAgg {
    fn add(&mut self, other: &MeterAgg) {
        self.quantity = plus(self.quantity, other.quantity);
        self.charged = plus(self.charged, other.charged);
        self.revenue = plus(self.revenue, other.revenue);
        self.cost = plus(self.cost, other.cost);
        self.events += other.events;
    }
}

pub(crate) fn category_index(category: GrantCategory) -> usize {
    match category {
        GrantCategory::Allowance => 0,
        GrantCategory::Promotional => 1,
        GrantCategory::Purchased => 2,
    }
}

const CATEGORIES: [GrantCategory; 3] = [
    GrantCategory::Allowance,
    GrantCategory::Promotional,
    GrantCategory::Purchased,
];

/// Sums that cannot overflow for inputs bounded by `AMOUNT_MAX` within any realistic history;
/// an overflow here is a broken invariant, so it stops the node loudly.
#[inline(always)]
pub(crate) fn plus(a: Amount, b: Amount) -> Amount {
    match a.checked_add(b) {
        Some(sum) => sum,
        None => overflow("adding", b, a),
    }
}

#[inline(always)]
pub(crate) fn minus(a: Amount, b: Amount) -> Amount {
    match a.checked_sub(b) {
        Some(difference) => difference,
        None => overflow("subtracting", b, a),
    }
}

/// Out of line, so `plus` and `minus` stay small where they are inlined.
#[cold]
#[inline(never)]
fn overflow(doing: &str, b: Amount, a: Amount) -> ! {
    panic!("invariant: amount overflow {doing} {b} and {a}")
}

/// The ledger-wide sums of every account's [`ReportAgg`], per asset and month, kept up to date as
/// the accounts' figures change, so a ledger-wide report reads a record per asset and month
/// instead of walking every account (which held the state, and every apply behind it, for some
/// 340 ms at a million accounts). Derived state: not in snapshots (their format is unchanged),
/// rebuilt from the accounts when a snapshot is loaded, and compared with them by
/// `LedgerState::check_invariants` (which the tests run after every step).
#[derive(Clone, Debug, Default)]
pub(crate) struct LedgerReports {
    by_asset: BTreeMap<AssetCode, BTreeMap<Month, ReportAgg>>,
    /// While an atomic batch may still be undone: each (asset, month) it changed, as it was
    /// before (`None`: absent), so undoing it costs what it touched, not a copy of every
    /// month's sums taken for each batch.
    undo: Option<Vec<(AssetCode, Month, Option<ReportAgg>)>>,
}

/// The sums, not how an undo is under way.
impl PartialEq for LedgerReports {
    fn eq(&self, other: &Self) -> bool {
        self.by_asset == other.by_asset
    }
}

impl Eq for LedgerReports {}

impl LedgerReports {
    /// The sums of `accounts`' figures (each in its asset).
    pub fn from_accounts<'a>(
        accounts: impl Iterator<Item = (&'a AssetCode, &'a VecMap<Month, ReportAgg>)>,
    ) -> Self {
        let mut sums = LedgerReports::default();
        for (asset, reports) in accounts {
            for (month, agg) in reports.iter() {
                sums.agg(asset, *month).add(agg);
            }
        }
        sums
    }

    /// Starts remembering what changes, for [`Self::undo`] (see `usage::Checkpoint`).
    pub fn begin_undo(&mut self) {
        self.undo = Some(Vec::new());
    }

    /// Keeps the changes since [`Self::begin_undo`].
    pub fn keep(&mut self) {
        self.undo = None;
    }

    /// Puts back every (asset, month) changed since [`Self::begin_undo`] as it was.
    pub fn undo(&mut self) {
        for (asset, month, before) in self.undo.take().unwrap_or_default().into_iter().rev() {
            match before {
                Some(agg) => {
                    self.by_asset.entry(asset).or_default().insert(month, agg);
                }
                None => {
                    if let Some(months) = self.by_asset.get_mut(&asset) {
                        months.remove(&month);
                        if months.is_empty() {
                            self.by_asset.remove(&asset);
                        }
                    }
                }
            }
        }
    }

    fn agg(&mut self, asset: &AssetCode, month: Month) -> &mut ReportAgg {
        if let Some(undo) = &mut self.undo {
            // A batch touches a month or two: a look along the list beats a set.
            if !undo.iter().any(|(a, m, _)| a == asset && *m == month) {
                let before = self
                    .by_asset
                    .get(asset)
                    .and_then(|months| months.get(&month))
                    .cloned();
                undo.push((asset.clone(), month, before));
            }
        }
        if !self.by_asset.contains_key(asset) {
            self.by_asset.insert(asset.clone(), BTreeMap::new());
        }
        self.by_asset
            .get_mut(asset)
            .expect("inserted above")
            .entry(month)
            .or_default()
    }

    /// Every (asset, month)'s figures, in `month` only when given.
    pub fn iter(&self, month: Option<Month>) -> impl Iterator<Item = (&AssetCode, &ReportAgg)> {
        self.by_asset.iter().flat_map(move |(asset, months)| {
            months
                .iter()
                .filter(move |(m, _)| month.is_none_or(|wanted| **m == wanted))
                .map(move |(_, agg)| (asset, agg))
        })
    }
}

/// Applies `change` to an account's figures for `month` (`reports`, in `asset`) and to the
/// ledger-wide sums alike: the only way the figures change, so the two always agree.
pub(crate) fn book(
    reports: &mut VecMap<Month, ReportAgg>,
    ledger: &mut LedgerReports,
    asset: &AssetCode,
    month: Month,
    change: impl Fn(&mut ReportAgg),
) {
    change(reports.get_or_insert_with(&month, ReportAgg::default));
    change(ledger.agg(asset, month));
}

impl ReportAgg {
    /// Adds every figure of `other` to this one's.
    fn add(&mut self, other: &ReportAgg) {
        self.breakage = plus(self.breakage, other.breakage);
        for i in 0..3 {
            self.granted[i] = plus(self.granted[i], other.granted[i]);
        }
        for (meter, m) in other.meters.iter() {
            self.meters
                .get_or_insert_with(meter, MeterAgg::default)
                .add(m);
        }
    }

    pub fn add_usage(
        &mut self,
        meter: &Meter,
        quantity: Amount,
        charged: Amount,
        revenue: Amount,
        cost: Amount,
    ) {
        let entry = self.meters.get_or_insert_with(meter, MeterAgg::default);
        entry.quantity = plus(entry.quantity, quantity);
        entry.charged = plus(entry.charged, charged);
        entry.revenue = plus(entry.revenue, revenue);
        entry.cost = plus(entry.cost, cost);
        entry.events += 1;
    }
}

/// Folds aggregates (each in the given asset) into one view. Revenue, cost and breakage are in
/// the reporting currency, so they add across assets; charged and granted stay per asset.
pub(crate) fn to_view<'a>(
    parts: impl Iterator<Item = (&'a AssetCode, &'a ReportAgg)>,
) -> ReportView {
    #[derive(Default)]
    struct PerAsset {
        charged: Amount,
        granted: [Amount; 3],
        meters: BTreeMap<Meter, MeterAgg>,
    }
    let mut view = ReportView::default();
    let mut by_asset: BTreeMap<AssetCode, PerAsset> = BTreeMap::new();
    for (asset, agg) in parts {
        let per_asset = by_asset.entry(asset.clone()).or_default();
        view.breakage = plus(view.breakage, agg.breakage);
        for i in 0..3 {
            per_asset.granted[i] = plus(per_asset.granted[i], agg.granted[i]);
        }
        for (meter, m) in agg.meters.iter() {
            per_asset.meters.entry(meter.clone()).or_default().add(m);
            per_asset.charged = plus(per_asset.charged, m.charged);
            view.revenue = plus(view.revenue, m.revenue);
            view.cost = plus(view.cost, m.cost);
            view.events += m.events;
        }
    }
    for (asset, per_asset) in by_asset {
        view.charged.push((asset.clone(), per_asset.charged));
        for (index, category) in CATEGORIES.iter().enumerate() {
            if !per_asset.granted[index].is_zero() {
                view.granted
                    .push((*category, asset.clone(), per_asset.granted[index]));
            }
        }
        for (meter, m) in per_asset.meters {
            view.meters.push(MeterReportView {
                meter,
                asset: asset.clone(),
                quantity: m.quantity,
                charged: m.charged,
                revenue: m.revenue,
                cost: m.cost,
                margin: minus(m.revenue, m.cost),
                events: m.events,
            });
        }
    }
    view.margin = minus(view.revenue, view.cost);
    view
}
