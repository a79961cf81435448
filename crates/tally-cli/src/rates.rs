//! The rates file of `tally price publish` and its mirror in `tally price show --json`:
//! `{"rates": [{"meter": "tokens", "match": {"model": "m1"}, "per_unit": {"unit_price": "0.002",
//! "per": "1"}}]}`; the other models are `package {size, price}`, `graduated {tiers: [{up_to,
//! unit_price}], per}` (the last tier's `up_to` null) and `flat {amount}`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tally_proto::v1;

/// Largest rates file read.
const RATES_FILE_BYTES_MAX: u64 = 16 * 1024 * 1024;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RatesFile {
    pub rates: Vec<RateJson>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateJson {
    pub meter: String,
    #[serde(
        rename = "match",
        default,
        deserialize_with = "crate::values::unique_keys"
    )]
    pub match_dimensions: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_unit: Option<PerUnitJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<PackageJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graduated: Option<GraduatedJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flat: Option<FlatJson>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PerUnitJson {
    pub unit_price: String,
    #[serde(default = "one")]
    pub per: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PackageJson {
    pub size: String,
    pub price: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TierJson {
    pub up_to: Option<String>,
    pub unit_price: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GraduatedJson {
    pub tiers: Vec<TierJson>,
    #[serde(default = "one")]
    pub per: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FlatJson {
    pub amount: String,
}

fn one() -> String {
    "1".to_string()
}

/// Reads and converts a rates file; errors name the file and where in it the problem is.
pub fn read_rates_file(path: &Path) -> Result<Vec<v1::Rate>, String> {
    let shown = path.display();
    let metadata =
        std::fs::metadata(path).map_err(|error| format!("cannot read {shown}: {error}"))?;
    if metadata.len() > RATES_FILE_BYTES_MAX {
        return Err(format!(
            "{shown} is {} bytes; at most {RATES_FILE_BYTES_MAX} allowed",
            metadata.len()
        ));
    }
    let text =
        std::fs::read_to_string(path).map_err(|error| format!("cannot read {shown}: {error}"))?;
    parse_rates(&text).map_err(|error| format!("{shown}: {error}"))
}

/// Parses rates JSON (amounts must be strings: JSON numbers are not exact).
pub fn parse_rates(text: &str) -> Result<Vec<v1::Rate>, String> {
    let file: RatesFile = serde_json::from_str(text).map_err(|error| {
        let hint = if error.to_string().contains("expected a string") {
            " (amounts are decimal strings such as \"0.002\", never JSON numbers)"
        } else {
            ""
        };
        format!("{error}{hint}")
    })?;
    if file.rates.is_empty() {
        return Err("\"rates\" is empty; give at least one rate".to_string());
    }
    file.rates
        .into_iter()
        .enumerate()
        .map(|(index, rate)| to_wire(rate).map_err(|reason| format!("rates[{index}]: {reason}")))
        .collect()
}

fn to_wire(rate: RateJson) -> Result<v1::Rate, String> {
    use v1::rate::Model;
    let mut models = Vec::new();
    if let Some(per_unit) = rate.per_unit {
        models.push(Model::PerUnit(v1::PerUnit {
            unit_price: per_unit.unit_price,
            per: per_unit.per,
        }));
    }
    if let Some(package) = rate.package {
        models.push(Model::Package(v1::Package {
            size: package.size,
            price: package.price,
        }));
    }
    if let Some(graduated) = rate.graduated {
        models.push(Model::Graduated(v1::Graduated {
            tiers: graduated
                .tiers
                .into_iter()
                .map(|tier| v1::Tier {
                    up_to: tier.up_to,
                    unit_price: tier.unit_price,
                })
                .collect(),
            per: graduated.per,
        }));
    }
    if let Some(flat) = rate.flat {
        models.push(Model::Flat(v1::Flat {
            amount: flat.amount,
        }));
    }
    if models.len() != 1 {
        return Err(format!(
            "has {} pricing models; give exactly one of per_unit, package, graduated, flat",
            models.len()
        ));
    }
    Ok(v1::Rate {
        meter: rate.meter,
        dimensions: rate
            .match_dimensions
            .into_iter()
            .map(|(key, value)| v1::KeyValue { key, value })
            .collect(),
        model: models.pop(),
    })
}

/// The JSON form of a wire rate, the same shape as the rates file.
pub fn rate_json(rate: &v1::Rate) -> RateJson {
    use v1::rate::Model;
    let mut json = RateJson {
        meter: rate.meter.clone(),
        match_dimensions: rate
            .dimensions
            .iter()
            .map(|pair| (pair.key.clone(), pair.value.clone()))
            .collect(),
        per_unit: None,
        package: None,
        graduated: None,
        flat: None,
    };
    match &rate.model {
        Some(Model::PerUnit(model)) => {
            json.per_unit = Some(PerUnitJson {
                unit_price: model.unit_price.clone(),
                per: model.per.clone(),
            })
        }
        Some(Model::Package(model)) => {
            json.package = Some(PackageJson {
                size: model.size.clone(),
                price: model.price.clone(),
            })
        }
        Some(Model::Graduated(model)) => {
            json.graduated = Some(GraduatedJson {
                tiers: model
                    .tiers
                    .iter()
                    .map(|tier| TierJson {
                        up_to: tier.up_to.clone(),
                        unit_price: tier.unit_price.clone(),
                    })
                    .collect(),
                per: model.per.clone(),
            })
        }
        Some(Model::Flat(model)) => {
            json.flat = Some(FlatJson {
                amount: model.amount.clone(),
            })
        }
        None => {}
    }
    json
}

/// One line describing a rate's model, for tables.
pub fn model_text(rate: &v1::Rate) -> String {
    use v1::rate::Model;
    match &rate.model {
        Some(Model::PerUnit(model)) => format!("per_unit {} per {}", model.unit_price, model.per),
        Some(Model::Package(model)) => format!("package {} per {}", model.price, model.size),
        Some(Model::Graduated(model)) => {
            let tiers: Vec<String> = model
                .tiers
                .iter()
                .map(|tier| {
                    format!(
                        "{}@{}",
                        tier.up_to.as_deref().unwrap_or("inf"),
                        tier.unit_price
                    )
                })
                .collect();
            format!("graduated per {}: {}", model.per, tiers.join(", "))
        }
        Some(Model::Flat(model)) => format!("flat {}", model.amount),
        None => "-".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_model_parses_and_round_trips() {
        let text = r#"{"rates": [
            {"meter": "tokens", "match": {"model": "m1"}, "per_unit": {"unit_price": "0.002", "per": "1"}},
            {"meter": "tokens", "match": {"model": "m2"}, "per_unit": {"unit_price": "0.01"}},
            {"meter": "images", "package": {"size": "10", "price": "1.5"}},
            {"meter": "storage", "graduated": {"tiers": [{"up_to": "100", "unit_price": "1"}, {"up_to": null, "unit_price": "0.5"}], "per": "1"}},
            {"meter": "calls", "flat": {"amount": "0.1"}}
        ]}"#;
        let rates = parse_rates(text).unwrap();
        assert_eq!(rates.len(), 5);
        assert_eq!(rates[0].dimensions[0].key, "model");
        match &rates[1].model {
            Some(v1::rate::Model::PerUnit(model)) => assert_eq!(model.per, "1"),
            other => panic!("{other:?}"),
        }
        let back: Vec<v1::Rate> = rates
            .iter()
            .map(|rate| to_wire(rate_json(rate)).unwrap())
            .collect();
        assert_eq!(back, rates);
        assert_eq!(model_text(&rates[3]), "graduated per 1: 100@1, inf@0.5");
    }

    #[test]
    fn mistakes_are_explained() {
        let error = parse_rates(
            r#"{"rates": [{"meter": "t", "match": {"model": "large", "model": "small"}, "flat": {"amount": "1"}}]}"#,
        )
        .unwrap_err();
        assert!(
            error.contains(r#"key "model" appears more than once"#),
            "a repeated match key is refused, not resolved to the last: {error}"
        );
        let error =
            parse_rates(r#"{"rates": [{"meter": "t", "per_unit": {"unit_price": 0.002}}]}"#)
                .unwrap_err();
        assert!(error.contains("decimal strings"), "{error}");
        let error = parse_rates(r#"{"rates": [{"meter": "t"}]}"#).unwrap_err();
        assert!(
            error.starts_with("rates[0]: has 0 pricing models"),
            "{error}"
        );
        let error = parse_rates(
            r#"{"rates": [{"meter": "t", "flat": {"amount": "1"}, "per_unit": {"unit_price": "1"}}]}"#,
        )
        .unwrap_err();
        assert!(error.contains("has 2 pricing models"), "{error}");
        let error =
            parse_rates(r#"{"rates": [{"meter": "t", "flat": {"amount": "1"}, "extra": 1}]}"#)
                .unwrap_err();
        assert!(error.contains("unknown field `extra`"), "{error}");
        assert!(parse_rates(r#"{"rates": []}"#)
            .unwrap_err()
            .contains("empty"));
        assert!(parse_rates("not json").is_err());
    }
}
