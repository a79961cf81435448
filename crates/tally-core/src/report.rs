//! Monthly aggregates behind reports: per account and per (month, asset) ledger-wide.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::vecmap::VecMap;

use crate::command::GrantCategory;
use crate::ids::{AssetCode, Meter};
use crate::money::Amount;
use crate::view::{MeterReportView, ReportView};

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

impl ReportAgg {
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
            let entry = per_asset.meters.entry(meter.clone()).or_default();
            entry.quantity = plus(entry.quantity, m.quantity);
            entry.charged = plus(entry.charged, m.charged);
            entry.revenue = plus(entry.revenue, m.revenue);
            entry.cost = plus(entry.cost, m.cost);
            entry.events += m.events;
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
