//! Price books (and the ledger-wide cost book): versions, rate matching and the four models.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use crate::command::{Rate, RateModel, PAIRS_MAX, PAIR_VALUE_LEN_MAX, RATES_MAX, TIERS_MAX};
use crate::dimensions::Dimensions;
use crate::error::InvalidInput;
use crate::ids::{AssetCode, Key, Meter};
use crate::money::Amount;
use crate::validate::{check_amount, check_pairs};

/// A price or cost book: numbered versions, each in force from its `effective_from`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PriceBook {
    pub ordinal: u32,
    pub asset: AssetCode,
    /// In publication order; `version` = index + 1.
    pub versions: Vec<PriceVersion>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PriceVersion {
    pub version: u32,
    pub effective_from: u64,
    /// Rates by meter, each list most specific first (then in publication order).
    pub rates: BTreeMap<Meter, MeterRates>,
}

/// The rates of one meter in one version, and the [`Stamp`] that names this list in the rate
/// memos of dimension lists ([`Dimensions::memo`]). Encoded as the list alone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct MeterRates {
    pub rates: Vec<Rate>,
    #[serde(skip)]
    stamp: Stamp,
}

impl MeterRates {
    fn new(rates: Vec<Rate>) -> MeterRates {
        MeterRates {
            rates,
            stamp: Stamp::default(),
        }
    }

    /// The index of the most specific rate whose every dimension equals the event's.
    fn find(&self, dimensions: &[(Key, String)]) -> Option<usize> {
        self.rates
            .iter()
            .position(|rate| matches(&rate.dimensions, dimensions))
    }

    /// [`Self::find`] for an event's dimensions, remembered in their list: events name the
    /// same few dimension lists, and the walk over the rates compared up to every pair of
    /// every rate (5.7% of the ledger's instructions per event). The memo holds only what
    /// `find` returns for this list, so it changes no result.
    fn find_remembered(&self, dimensions: &Dimensions) -> Option<usize> {
        if let Some(found) = dimensions.memo(self.stamp.0) {
            return found;
        }
        let found = self.find(dimensions);
        dimensions.remember(self.stamp.0, found);
        found
    }
}

/// A process-wide unique number for a list of rates, taken when the list is built or decoded
/// (never encoded). A list's rates never change after it is built, so a stamp stands for one
/// list's content for as long as the process runs. Two lists compare equal by their rates
/// alone.
#[derive(Clone, Copy, Debug)]
struct Stamp(u64);

impl Default for Stamp {
    fn default() -> Stamp {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Stamp(NEXT.fetch_add(1, AtomicOrdering::Relaxed))
    }
}

impl PartialEq for Stamp {
    fn eq(&self, _: &Stamp) -> bool {
        true
    }
}

impl Eq for Stamp {}

impl PriceBook {
    /// When the book's earliest version takes effect (versions are numbered in publish order,
    /// which need not be the order of their times); `None` for a book with no version.
    pub fn first_effective_from(&self) -> Option<u64> {
        self.versions.iter().map(|v| v.effective_from).min()
    }

    /// The version in force at `at_ms`: the greatest `effective_from <= at_ms`, ties to the
    /// later version.
    pub fn version_at(&self, at_ms: u64) -> Option<&PriceVersion> {
        self.versions
            .iter()
            .filter(|v| v.effective_from <= at_ms)
            .max_by_key(|v| (v.effective_from, v.version))
    }
}

impl PriceVersion {
    /// The most specific rate of `meter` whose every dimension equals the event's.
    pub fn rate_for(&self, meter: &Meter, dimensions: &Dimensions) -> Option<&Rate> {
        self.rate_and_meter(meter, dimensions).map(|(rate, _)| rate)
    }

    /// [`Self::rate_for`], with the book's own copy of the meter name: accounts key their
    /// per-meter figures with it, so those keys share one allocation instead of each keeping
    /// the one of the event that created it.
    pub fn rate_and_meter(
        &self,
        meter: &Meter,
        dimensions: &Dimensions,
    ) -> Option<(&Rate, &Meter)> {
        let (meter, rates) = self.rates.get_key_value(meter)?;
        let index = rates.find_remembered(dimensions)?;
        Some((&rates.rates[index], meter))
    }

    pub fn all_rates(&self) -> Vec<Rate> {
        self.rates
            .values()
            .flat_map(|list| &list.rates)
            .cloned()
            .collect()
    }
}

/// True when every pair of `wanted` is in `dimensions`. Both lists are sorted by key with
/// unique keys, so one merge walk decides it; keys are compared for equality first (which is
/// a length check or a pointer check when they differ or are shared) and ordered only then.
fn matches(wanted: &[(Key, String)], dimensions: &[(Key, String)]) -> bool {
    let mut rest = dimensions.iter();
    'wanted: for (key, value) in wanted {
        for (k, v) in rest.by_ref() {
            if k == key {
                if v != value {
                    return false;
                }
                continue 'wanted;
            }
            if k > key {
                return false;
            }
        }
        return false;
    }
    true
}

/// Validates the rates of a new version and indexes them by meter. `scale_max` bounds prices.
pub(crate) fn index_rates(
    rates: &[Rate],
    scale_max: u32,
) -> Result<BTreeMap<Meter, MeterRates>, InvalidInput> {
    if rates.is_empty() {
        return Err(InvalidInput::new("rates", "must list at least one rate"));
    }
    if rates.len() > RATES_MAX {
        return Err(InvalidInput::new(
            "rates",
            format!("has {} rates; at most {RATES_MAX} allowed", rates.len()),
        ));
    }
    // Each meter's rates with their positions in `rates`, to name them in errors.
    let mut by_meter: BTreeMap<Meter, Vec<(usize, Rate)>> = BTreeMap::new();
    for (index, rate) in rates.iter().enumerate() {
        let at = |e: InvalidInput| e.within(&format!("rates[{index}]"));
        check_pairs(
            "dimensions",
            &rate.dimensions,
            PAIRS_MAX,
            PAIR_VALUE_LEN_MAX,
        )
        .map_err(at)?;
        check_model(&rate.model, scale_max).map_err(at)?;
        let same_meter = by_meter.entry(rate.meter.clone()).or_default();
        for (other_index, other) in same_meter.iter() {
            if other.dimensions.len() == rate.dimensions.len()
                && !dimensions_conflict(&other.dimensions, &rate.dimensions)
            {
                return Err(InvalidInput::new(
                    format!("rates[{index}].dimensions"),
                    format!(
                        "is as specific as rates[{other_index}] (meter {}) and both can match the same event; make one more specific",
                        rate.meter
                    ),
                ));
            }
        }
        same_meter.push((index, rate.clone()));
    }
    Ok(by_meter
        .into_iter()
        .map(|(meter, list)| {
            let mut list: Vec<Rate> = list.into_iter().map(|(_, rate)| rate).collect();
            // Stable sort keeps publication order among rates of equal specificity.
            list.sort_by_key(|rate| std::cmp::Reverse(rate.dimensions.len()));
            (meter, MeterRates::new(list))
        })
        .collect())
}

/// Two dimension lists conflict when some key is in both with different values: then no event
/// can match both.
fn dimensions_conflict(a: &[(Key, String)], b: &[(Key, String)]) -> bool {
    a.iter()
        .any(|(key, value)| b.iter().any(|(k, v)| k == key && v != value))
}

fn check_model(model: &RateModel, scale_max: u32) -> Result<(), InvalidInput> {
    match model {
        RateModel::PerUnit { unit_price, per } => {
            check_amount("per_unit.unit_price", *unit_price, false, scale_max)?;
            check_positive("per_unit.per", *per)
        }
        RateModel::Package { size, price } => {
            check_positive("package.size", *size)?;
            check_amount("package.price", *price, false, scale_max)
        }
        RateModel::Flat { amount } => check_amount("flat.amount", *amount, false, scale_max),
        RateModel::Graduated { tiers, per } => {
            check_positive("graduated.per", *per)?;
            if tiers.is_empty() || tiers.len() > TIERS_MAX {
                return Err(InvalidInput::new(
                    "graduated.tiers",
                    format!("must have 1..={TIERS_MAX} tiers, got {}", tiers.len()),
                ));
            }
            let mut previous = Amount::ZERO;
            for (index, tier) in tiers.iter().enumerate() {
                let field = format!("graduated.tiers[{index}]");
                check_amount("unit_price", tier.unit_price, false, scale_max)
                    .map_err(|e| e.within(&field))?;
                let last = index + 1 == tiers.len();
                match (tier.up_to, last) {
                    (None, true) => {}
                    (None, false) => {
                        return Err(InvalidInput::new(
                            format!("{field}.up_to"),
                            "only the last tier may be unbounded",
                        ))
                    }
                    (Some(_), true) => {
                        return Err(InvalidInput::new(
                            format!("{field}.up_to"),
                            "the last tier must be unbounded (up_to null)",
                        ))
                    }
                    (Some(up_to), false) => {
                        check_amount("up_to", up_to, true, 18).map_err(|e| e.within(&field))?;
                        if up_to <= previous {
                            return Err(InvalidInput::new(
                                format!("{field}.up_to"),
                                format!("must be greater than the previous tier's ({previous})"),
                            ));
                        }
                        previous = up_to;
                    }
                }
            }
            Ok(())
        }
    }
}

fn check_positive(field: &str, value: Amount) -> Result<(), InvalidInput> {
    check_amount(field, value, true, 18)
}

/// The exact (unrounded) charge of `quantity` under `model`, given the account's usage of the
/// meter earlier this month (for graduated tiers). `None` on overflow.
pub(crate) fn exact_charge(
    model: &RateModel,
    quantity: Amount,
    month_quantity_before: Amount,
) -> Option<Amount> {
    match model {
        RateModel::PerUnit { unit_price, per } => {
            let total = quantity.checked_mul(*unit_price)?;
            if *per == Amount::ONE {
                Some(total)
            } else {
                total.checked_div(*per)
            }
        }
        RateModel::Package { size, price } => {
            // Whole packages, rounded up, from the exact remainder: a quotient rounded to
            // `Decimal`'s 28 digits first could lose a tiny remainder, and the package with it.
            let (quantity, size) = (quantity.decimal(), size.decimal());
            let remainder = quantity.checked_rem(size)?;
            let mut packages = quantity.checked_sub(remainder)?.checked_div(size)?.trunc();
            if !remainder.is_zero() {
                packages = packages.checked_add(rust_decimal::Decimal::ONE)?;
            }
            Amount::from_decimal(packages).checked_mul(*price)
        }
        RateModel::Flat { amount } => Some(*amount),
        RateModel::Graduated { tiers, per } => {
            let after = month_quantity_before.checked_add(quantity)?;
            let total_after = graduated_total(tiers, after)?;
            let total_before = graduated_total(tiers, month_quantity_before)?;
            total_after.checked_sub(total_before)?.checked_div(*per)
        }
    }
}

/// Price (times `per`) of the first `quantity` units of the month under graduated tiers.
fn graduated_total(tiers: &[crate::command::Tier], quantity: Amount) -> Option<Amount> {
    let mut total = Amount::ZERO;
    let mut floor = Amount::ZERO;
    for tier in tiers {
        if quantity <= floor {
            break;
        }
        let ceiling = match tier.up_to {
            Some(up_to) => quantity.min(up_to),
            None => quantity,
        };
        let units = ceiling.checked_sub(floor)?;
        total = total.checked_add(units.checked_mul(tier.unit_price)?)?;
        match tier.up_to {
            Some(up_to) => floor = up_to,
            None => break,
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Tier;

    fn a(text: &str) -> Amount {
        Amount::parse("t", text).unwrap()
    }

    #[test]
    fn graduated_crosses_tiers() {
        let tiers = vec![
            Tier {
                up_to: Some(a("100")),
                unit_price: a("1"),
            },
            Tier {
                up_to: Some(a("200")),
                unit_price: a("0.5"),
            },
            Tier {
                up_to: None,
                unit_price: a("0.1"),
            },
        ];
        let model = RateModel::Graduated { tiers, per: a("1") };
        assert_eq!(exact_charge(&model, a("150"), a("0")), Some(a("125")));
        assert_eq!(exact_charge(&model, a("100"), a("150")), Some(a("30")));
    }

    #[test]
    fn package_rounds_up() {
        let model = RateModel::Package {
            size: a("1000"),
            price: a("2"),
        };
        assert_eq!(exact_charge(&model, a("1001"), a("0")), Some(a("4")));
        assert_eq!(exact_charge(&model, a("0"), a("0")), Some(a("0")));
    }

    fn pairs(pairs: &[(&str, &str)]) -> Vec<(Key, String)> {
        pairs
            .iter()
            .map(|(k, v)| (Key::new(k).unwrap(), v.to_string()))
            .collect()
    }

    fn rate(meter: &str, dimensions: &[(&str, &str)], price: &str) -> Rate {
        Rate {
            meter: Meter::new(meter).unwrap(),
            dimensions: pairs(dimensions),
            model: RateModel::PerUnit {
                unit_price: a(price),
                per: a("1"),
            },
        }
    }

    fn version(rates: &[Rate]) -> PriceVersion {
        PriceVersion {
            version: 1,
            effective_from: 0,
            rates: index_rates(rates, 6).unwrap(),
        }
    }

    fn price_of(version: &PriceVersion, meter: &str, dimensions: &Dimensions) -> Option<Amount> {
        let (rate, _) = version.rate_and_meter(&Meter::new(meter).unwrap(), dimensions)?;
        match rate.model {
            RateModel::PerUnit { unit_price, .. } => Some(unit_price),
            _ => unreachable!("per_unit rates only"),
        }
    }

    /// The rate a dimension list remembers is the one the walk finds, for every list of
    /// rates it is asked about (more than its memo holds, so remembered matches are replaced),
    /// asked again and again, including "no rate".
    #[test]
    fn a_remembered_rate_is_the_rate_the_walk_finds() {
        let models = ["m1", "m2", "m3"];
        let regions = ["eu", "us"];
        let versions: Vec<PriceVersion> = (0..6)
            .map(|v| {
                let mut rates = vec![rate("tokens", &[], &format!("0.{v}9"))];
                for (i, model) in models.iter().enumerate() {
                    if (i + v) % 3 != 0 {
                        rates.push(rate("tokens", &[("model", model)], &format!("{v}.{i}")));
                    }
                    rates.push(rate(
                        "tokens",
                        &[("model", model), ("region", regions[(i + v) % 2])],
                        &format!("{v}.{i}5"),
                    ));
                    rates.push(rate("images", &[("model", model)], &format!("{v}{i}")));
                }
                version(&rates)
            })
            .collect();
        let lists: Vec<Dimensions> = models
            .iter()
            .flat_map(|model| {
                regions.iter().map(move |region| {
                    Dimensions::new(pairs(&[("model", model), ("region", region)]))
                })
            })
            .chain([
                Dimensions::new(pairs(&[("zone", "z")])),
                Dimensions::default(),
            ])
            .collect();
        for round in 0..3 {
            for version in &versions {
                for meter in ["tokens", "images", "audio"] {
                    for list in &lists {
                        let walked = version
                            .rates
                            .get(&Meter::new(meter).unwrap())
                            .and_then(|rates| rates.find(list).map(|index| &rates.rates[index]));
                        let found = version
                            .rate_and_meter(&Meter::new(meter).unwrap(), list)
                            .map(|(rate, _)| rate);
                        assert_eq!(found, walked, "round {round}, {meter}, {list:?}");
                    }
                }
            }
        }
    }

    /// A new version's rates are new lists with stamps of their own: a dimension list that
    /// remembered its match in the old version finds the new version's rate.
    #[test]
    fn a_new_version_is_not_answered_from_the_old_ones_memo() {
        let dims = Dimensions::new(pairs(&[("model", "m1")]));
        let old = version(&[rate("tokens", &[("model", "m1")], "1")]);
        assert_eq!(price_of(&old, "tokens", &dims), Some(a("1")));
        assert_eq!(price_of(&old, "tokens", &dims), Some(a("1")));
        let new = version(&[
            rate("tokens", &[("model", "m2")], "3"),
            rate("tokens", &[], "2"),
        ]);
        assert_eq!(price_of(&new, "tokens", &dims), Some(a("2")));
        let none = version(&[rate("tokens", &[("model", "m2")], "3")]);
        assert_eq!(price_of(&none, "tokens", &dims), None);
        assert_eq!(price_of(&none, "tokens", &dims), None);
        assert_eq!(price_of(&old, "tokens", &dims), Some(a("1")));
        // Decoded and cloned versions: equal to the original, and the same rates found.
        let decoded: PriceVersion =
            bincode::deserialize(&bincode::serialize(&new).unwrap()).unwrap();
        assert_eq!(decoded, new);
        assert_eq!(price_of(&decoded, "tokens", &dims), Some(a("2")));
        assert_eq!(price_of(&new.clone(), "tokens", &dims), Some(a("2")));
        assert_eq!(
            bincode::serialize(&new.rates).unwrap(),
            bincode::serialize(
                &new.rates
                    .iter()
                    .map(|(meter, list)| (meter.clone(), list.rates.clone()))
                    .collect::<BTreeMap<_, _>>()
            )
            .unwrap(),
            "encoded as the lists of rates alone"
        );
    }
}
