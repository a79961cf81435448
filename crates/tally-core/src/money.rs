//! Exact decimal amounts. No floating point anywhere: every amount is a `rust_decimal::Decimal`
//! behind the [`Amount`] newtype, every operation is checked, and overflow is an error value.

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

use crate::error::InvalidInput;

/// Largest number of digits after the point an asset may have.
pub const SCALE_MAX: u32 = 18;

/// An exact decimal amount (money, quantity or price). May be negative where the context
/// allows it (a balance); constructors used at the edge reject negatives where they are invalid.
#[derive(Clone, Copy, Default)]
pub struct Amount(Decimal);

/// Comparison takes a shortcut when both sides have the same scale (the usual case): the
/// mantissas as `i128`, which orders them exactly as their values; other cases go to
/// `rust_decimal`. (Its addition already has such shortcuts of its own.)
impl PartialEq for Amount {
    fn eq(&self, other: &Amount) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for Amount {}

impl PartialOrd for Amount {
    fn partial_cmp(&self, other: &Amount) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Amount {
    fn cmp(&self, other: &Amount) -> std::cmp::Ordering {
        if self.0.scale() == other.0.scale() {
            self.0.mantissa().cmp(&other.0.mantissa())
        } else {
            self.0.cmp(&other.0)
        }
    }
}

impl std::hash::Hash for Amount {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

impl Amount {
    pub const ZERO: Amount = Amount(Decimal::ZERO);
    pub const ONE: Amount = Amount(Decimal::ONE);

    pub fn from_decimal(value: Decimal) -> Self {
        Amount(value.normalize())
    }

    /// Wraps a decimal as it is, without normalizing (for values already canonical or whose
    /// scale does not matter, on hot paths).
    pub(crate) fn from_decimal_raw(value: Decimal) -> Self {
        Amount(value)
    }

    pub fn decimal(self) -> Decimal {
        self.0
    }

    /// An integer amount (tests, counters).
    pub fn from_i64(value: i64) -> Self {
        Amount(Decimal::from(value))
    }

    /// Parses a decimal string such as `"12.50"`; rejects anything else with the field named.
    pub fn parse(field: &str, text: &str) -> Result<Self, InvalidInput> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(InvalidInput::new(
                field,
                "must be a decimal number, got an empty string",
            ));
        }
        if trimmed.contains(['e', 'E']) {
            return Err(InvalidInput::new(
                field,
                format!("must be a plain decimal number without exponent, got {text:?}"),
            ));
        }
        Decimal::from_str(trimmed)
            .map(Amount::from_decimal)
            .map_err(|_| {
                InvalidInput::new(
                    field,
                    format!(
                        "must be a decimal number with at most 28 significant digits, got {text:?}"
                    ),
                )
            })
    }

    /// Parses and requires `>= 0`.
    pub fn parse_non_negative(field: &str, text: &str) -> Result<Self, InvalidInput> {
        let value = Self::parse(field, text)?;
        if value.is_negative() {
            return Err(InvalidInput::new(
                field,
                format!("must be >= 0, got {value}"),
            ));
        }
        Ok(value)
    }

    /// Parses and requires `> 0`.
    pub fn parse_positive(field: &str, text: &str) -> Result<Self, InvalidInput> {
        let value = Self::parse(field, text)?;
        if !value.is_positive() {
            return Err(InvalidInput::new(
                field,
                format!("must be > 0, got {value}"),
            ));
        }
        Ok(value)
    }

    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    pub fn is_negative(self) -> bool {
        self.0.is_sign_negative() && !self.0.is_zero()
    }

    pub fn is_positive(self) -> bool {
        self.0.is_sign_positive() && !self.0.is_zero()
    }

    /// Digits after the point, ignoring trailing zeros.
    pub fn scale(self) -> u32 {
        // Most values carry no trailing zeros; normalizing (slow) only matters when they might.
        match self.0.scale() {
            0 => 0,
            _ => self.0.normalize().scale(),
        }
    }

    /// True when `self` has at most `max` digits after the point (ignoring trailing zeros).
    pub fn fits_scale(self, max: u32) -> bool {
        self.0.scale() <= max || self.scale() <= max
    }

    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }

    pub fn checked_mul(self, other: Amount) -> Option<Amount> {
        self.0.checked_mul(other.0).map(Amount)
    }

    pub fn checked_div(self, other: Amount) -> Option<Amount> {
        self.0.checked_div(other.0).map(Amount)
    }

    /// `self` rounded half-to-even at `scale` digits.
    pub fn round_half_even(self, scale: u32) -> Amount {
        Amount(
            self.0
                .round_dp_with_strategy(scale, RoundingStrategy::MidpointNearestEven),
        )
    }

    /// `self` rounded towards positive infinity to a whole number.
    pub fn ceil(self) -> Amount {
        Amount(self.0.ceil())
    }

    pub fn min(self, other: Amount) -> Amount {
        if self <= other {
            self
        } else {
            other
        }
    }

    pub fn max(self, other: Amount) -> Amount {
        if self >= other {
            self
        } else {
            other
        }
    }

    /// Canonical text at a fixed scale, e.g. `"1.500000"` for an asset of scale 6.
    pub fn to_scaled_string(self, scale: u32) -> String {
        let mut value = self.0;
        value.rescale(scale);
        value.to_string()
    }

    /// Canonical 16-byte form used by the state hash and binary encodings.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.normalize().serialize()
    }
}

impl std::ops::Neg for Amount {
    type Output = Amount;
    fn neg(self) -> Amount {
        Amount(-self.0)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.normalize(), f)
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.normalize(), f)
    }
}

/// Text in human-readable formats (JSON), 16 canonical bytes in binary ones (the log, snapshots).
impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_string())
        } else {
            serializer.serialize_bytes(&self.to_bytes())
        }
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            Amount::parse("amount", &text).map_err(serde::de::Error::custom)
        } else {
            struct BytesVisitor;
            impl serde::de::Visitor<'_> for BytesVisitor {
                type Value = Amount;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("16 bytes of a decimal")
                }
                fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Amount, E> {
                    let array: [u8; 16] = bytes
                        .try_into()
                        .map_err(|_| E::invalid_length(bytes.len(), &self))?;
                    Ok(Amount(Decimal::deserialize(array)))
                }
            }
            deserializer.deserialize_bytes(BytesVisitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_round() {
        let a = Amount::parse("x", "0.0000004").unwrap();
        assert_eq!(a.scale(), 7);
        assert_eq!(
            Amount::parse("x", "2.5").unwrap().round_half_even(0),
            Amount::from_i64(2)
        );
        assert_eq!(
            Amount::parse("x", "3.5").unwrap().round_half_even(0),
            Amount::from_i64(4)
        );
        assert!(Amount::parse("x", "1e3").is_err());
        assert!(Amount::parse("x", "abc").is_err());
        assert!(Amount::parse_positive("x", "0").is_err());
        assert_eq!(Amount::from_i64(3).to_scaled_string(2), "3.00");
    }

    /// The same-scale shortcut orders exactly as `rust_decimal` does.
    #[test]
    fn comparison_matches_rust_decimal() {
        let mut seed: u64 = 0x1234_5678_9abc_def1;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut values = vec![Decimal::ZERO, -Decimal::ZERO, Decimal::MAX, Decimal::MIN];
        for _ in 0..4000 {
            let bits = next();
            let mantissa = match bits % 4 {
                0 => (next() % 1000) as i128,
                1 => next() as i128,
                2 => ((next() as i128) << 32) ^ next() as i128,
                _ => ((1u128 << 96) - 1 - (next() % 3) as u128) as i128,
            };
            let mantissa = if bits & 16 == 0 { mantissa } else { -mantissa };
            let scale = ((bits >> 8) % 4) as u32 * 3;
            values.push(Decimal::from_i128_with_scale(mantissa, scale));
        }
        for pair in values.windows(2) {
            for (x, y) in [(pair[0], pair[1]), (pair[0], pair[0]), (pair[0], -pair[0])] {
                let (a, b) = (Amount(x), Amount(y));
                assert_eq!(a.cmp(&b), x.cmp(&y), "{x} cmp {y}");
                assert_eq!(a == b, x == y, "{x} == {y}");
            }
        }
    }

    #[test]
    fn binary_round_trip() {
        let a = Amount::parse("x", "-12.345").unwrap();
        let bytes = bincode::serialize(&a).unwrap();
        assert_eq!(bincode::deserialize::<Amount>(&bytes).unwrap(), a);
    }
}
