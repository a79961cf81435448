//! Monthly aggregates behind reports: per account and per (month, asset) ledger-wide.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::vecmap::VecMap;

use crate::command::GrantCategory;
use crate::ids::{AssetCode, Meter};
use crate::money::Amount;
use crate::view::{MeterReportView, ReportView};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ReportAgg {
    /// In the asset of the account (or of the ledger-wide key).
    pub charged: Amount,
    /// Reporting currency.
    pub revenue: Amount,
    pub cost: Amount,
    pub breakage: Amount,
    /// Indexed allowance, promotional, purchased.
    pub granted: [Amount; 3],
    pub events: u64,
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
pub(crate) fn plus(a: Amount, b: Amount) -> Amount {
    a.checked_add(b)
        .unwrap_or_else(|| panic!("invariant: amount overflow adding {a} and {b}"))
}

pub(crate) fn minus(a: Amount, b: Amount) -> Amount {
    a.checked_sub(b)
        .unwrap_or_else(|| panic!("invariant: amount overflow subtracting {b} from {a}"))
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
        self.charged = plus(self.charged, charged);
        self.revenue = plus(self.revenue, revenue);
        self.cost = plus(self.cost, cost);
        self.events += 1;
        let entry = self.meters.get_or_insert_with(meter, MeterAgg::default);
        entry.quantity = plus(entry.quantity, quantity);
        entry.charged = plus(entry.charged, charged);
        entry.revenue = plus(entry.revenue, revenue);
        entry.cost = plus(entry.cost, cost);
        entry.events += 1;
    }

    pub fn merge(&mut self, other: &ReportAgg) {
        self.charged = plus(self.charged, other.charged);
        self.revenue = plus(self.revenue, other.revenue);
        self.cost = plus(self.cost, other.cost);
        self.breakage = plus(self.breakage, other.breakage);
        for i in 0..3 {
            self.granted[i] = plus(self.granted[i], other.granted[i]);
        }
        self.events += other.events;
        for (meter, agg) in other.meters.iter() {
            let entry = self.meters.get_or_insert_with(meter, MeterAgg::default);
            entry.quantity = plus(entry.quantity, agg.quantity);
            entry.charged = plus(entry.charged, agg.charged);
            entry.revenue = plus(entry.revenue, agg.revenue);
            entry.cost = plus(entry.cost, agg.cost);
            entry.events += agg.events;
        }
    }
}

/// Folds per-asset aggregates into one view. Revenue, cost and breakage are in the reporting
/// currency, so they add across assets; charged and granted stay per asset.
pub(crate) fn to_view<'a>(
    parts: impl Iterator<Item = (&'a AssetCode, &'a ReportAgg)>,
) -> ReportView {
    let mut view = ReportView::default();
    let mut by_asset: BTreeMap<AssetCode, ReportAgg> = BTreeMap::new();
    for (asset, agg) in parts {
        by_asset.entry(asset.clone()).or_default().merge(agg);
    }
    for (asset, agg) in &by_asset {
        view.charged.push((asset.clone(), agg.charged));
        view.revenue = plus(view.revenue, agg.revenue);
        view.cost = plus(view.cost, agg.cost);
        view.breakage = plus(view.breakage, agg.breakage);
        view.events += agg.events;
        for (index, category) in CATEGORIES.iter().enumerate() {
            if !agg.granted[index].is_zero() {
                view.granted
                    .push((*category, asset.clone(), agg.granted[index]));
            }
        }
        for (meter, m) in agg.meters.iter() {
            view.meters.push(MeterReportView {
                meter: meter.clone(),
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
