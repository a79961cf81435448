//! Checks shared by every command: amounts in range and at scale, key/value pairs well formed.

use crate::error::InvalidInput;
use crate::ids::Key;
use crate::money::Amount;

/// Largest magnitude of any amount, quantity or price a command may carry: 10^15. Bounding
/// inputs keeps every sum and product the ledger forms inside `Decimal`'s 28 digits.
pub const AMOUNT_MAX: i64 = 1_000_000_000_000_000;

/// `value` must be `>= 0` (`> 0` when `positive`), at most `scale_max` decimals, at most 10^15.
pub fn check_amount(
    field: &str,
    value: Amount,
    positive: bool,
    scale_max: u32,
) -> Result<(), InvalidInput> {
    if positive && !value.is_positive() {
        return Err(InvalidInput::new(
            field,
            format!("must be > 0, got {value}"),
        ));
    }
    if value.is_negative() {
        return Err(InvalidInput::new(
            field,
            format!("must be >= 0, got {value}"),
        ));
    }
    check_magnitude(field, value, scale_max)
}

/// Scale and magnitude only (the value may be negative).
pub fn check_magnitude(field: &str, value: Amount, scale_max: u32) -> Result<(), InvalidInput> {
    if !value.fits_scale(scale_max) {
        return Err(InvalidInput::new(
            field,
            format!(
                "{value} has {} decimal places; at most {scale_max} allowed here",
                value.scale()
            ),
        ));
    }
    let limit = Amount::from_i64(AMOUNT_MAX);
    if value > limit || value < -limit {
        return Err(InvalidInput::new(
            field,
            format!("{value} exceeds the limit of 10^15"),
        ));
    }
    Ok(())
}

/// How many digits before the point an amount of an asset (or of the reporting currency) with
/// `scale` decimals may have: 15, but fewer past 12 decimals, so that its amounts and the sums
/// of many of them (balances, totals) stay exact in `Decimal`'s 28 significant digits instead
/// of being rounded. At scale 18: below 10^9.
pub fn asset_integer_digits(scale: u32) -> u32 {
    15u32.min(27u32.saturating_sub(scale))
}

/// [`check_amount`] for an amount of an asset with `scale` decimals: also within
/// [`asset_integer_digits`].
pub fn check_asset_amount(
    field: &str,
    value: Amount,
    positive: bool,
    scale: u32,
) -> Result<(), InvalidInput> {
    check_amount(field, value, positive, scale)?;
    check_asset_digits(field, value, scale)
}

/// [`check_magnitude`] for an amount of an asset with `scale` decimals: also within
/// [`asset_integer_digits`].
pub fn check_asset_magnitude(field: &str, value: Amount, scale: u32) -> Result<(), InvalidInput> {
    check_magnitude(field, value, scale)?;
    check_asset_digits(field, value, scale)
}

fn check_asset_digits(field: &str, value: Amount, scale: u32) -> Result<(), InvalidInput> {
    let digits = asset_integer_digits(scale);
    if digits >= 15 {
        return Ok(());
    }
    let limit = Amount::from_i64(10i64.pow(digits));
    if value > limit || value < -limit {
        return Err(InvalidInput::new(
            field,
            format!(
                "{value} exceeds the limit of 10^{digits} for an asset with {scale} decimal places (its amounts and their sums must stay exact in 28 significant digits)"
            ),
        ));
    }
    Ok(())
}

/// Key/value pairs (metadata, dimensions, rate matches): at most `max`, keys strictly sorted
/// (so unique), values at most `value_len_max` bytes of printable ASCII or UTF-8 text.
pub fn check_pairs(
    field: &str,
    pairs: &[(Key, String)],
    max: usize,
    value_len_max: usize,
) -> Result<(), InvalidInput> {
    if pairs.len() > max {
        return Err(InvalidInput::new(
            field,
            format!("has {} entries; at most {max} allowed", pairs.len()),
        ));
    }
    for (index, (key, value)) in pairs.iter().enumerate() {
        if index > 0 && pairs[index - 1].0 >= *key {
            return Err(InvalidInput::new(
                field,
                format!("key {key} is repeated or out of order; keys must be unique"),
            ));
        }
        if value.len() > value_len_max {
            return Err(InvalidInput::new(
                format!("{field}.{key}"),
                format!(
                    "value is {} bytes; at most {value_len_max} allowed",
                    value.len()
                ),
            ));
        }
        // Printable ASCII (the usual value) has no control character; only other text needs
        // decoding to check.
        let printable_ascii = value.bytes().all(|b| (0x20..0x7f).contains(&b));
        if !printable_ascii && value.chars().any(|c| c.is_control()) {
            return Err(InvalidInput::new(
                format!("{field}.{key}"),
                "value must not contain control characters",
            ));
        }
    }
    Ok(())
}

/// Sorts pairs by key and rejects duplicates: for the edge, which receives them in any order.
pub fn normalize_pairs(
    field: &str,
    mut pairs: Vec<(Key, String)>,
) -> Result<Vec<(Key, String)>, InvalidInput> {
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    for window in pairs.windows(2) {
        if window[0].0 == window[1].0 {
            return Err(InvalidInput::new(
                field,
                format!("key {} appears more than once", window[0].0),
            ));
        }
    }
    Ok(pairs)
}
