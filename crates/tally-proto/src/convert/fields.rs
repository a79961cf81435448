//! Field-level parsing helpers shared by the wire -> core conversions.

use tally_core::{
    Amount, Dimensions, InvalidInput, Key, Meter, Month, PAIRS_MAX, PAIR_VALUE_LEN_MAX,
};

use crate::v1;

/// Canonical wire text of an amount: exact, no exponent, no trailing zeros (`Display`'s text,
/// built without `fmt`: every settlement carries eight of them).
pub fn amount_text(amount: Amount) -> String {
    amount.to_text()
}

/// `YYYY-MM`.
pub fn month_text(month: Month) -> String {
    month.to_string()
}

/// Parses a `YYYY-MM` month (UTC calendar).
pub fn parse_month(field: &str, text: &str) -> Result<Month, InvalidInput> {
    let invalid = || InvalidInput::new(field, format!("must be a month as YYYY-MM, got {text:?}"));
    let (year, month) = text.split_once('-').ok_or_else(invalid)?;
    if year.len() != 4 || month.len() != 2 {
        return Err(invalid());
    }
    if !year
        .bytes()
        .chain(month.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return Err(invalid());
    }
    let year: i32 = year.parse().map_err(|_| invalid())?;
    let month: u32 = month.parse().map_err(|_| invalid())?;
    if !(1..=12).contains(&month) {
        return Err(InvalidInput::new(
            field,
            format!("month must be 01..=12, got {text:?}"),
        ));
    }
    Ok(Month { year, month })
}

/// Joins a parent path and a field: `events[3]` + `quantity` = `events[3].quantity`.
pub(crate) fn path(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_string()
    } else {
        format!("{parent}.{field}")
    }
}

pub(crate) fn amount(field: &str, text: &str) -> Result<Amount, InvalidInput> {
    Amount::parse(field, text)
}

pub(crate) fn amount_non_negative(field: &str, text: &str) -> Result<Amount, InvalidInput> {
    Amount::parse_non_negative(field, text)
}

pub(crate) fn amount_positive(field: &str, text: &str) -> Result<Amount, InvalidInput> {
    Amount::parse_positive(field, text)
}

pub(crate) fn optional_amount_non_negative(
    field: &str,
    text: Option<&str>,
) -> Result<Option<Amount>, InvalidInput> {
    text.map(|text| amount_non_negative(field, text))
        .transpose()
}

/// Names already checked while converting one request, to share. The events of a batch nearly
/// always name the same meter and dimension keys; handing out the id checked before (a shared
/// `Arc`) spares a check and an allocation per event. Only text that passed its check is kept,
/// so text that fails fails exactly as it would alone.
#[derive(Default)]
pub(crate) struct Seen {
    meter: Option<Meter>,
    keys: Vec<Key>,
}

impl Seen {
    /// `Meter::parse_as("meter", text)`, shared when `text` is the meter seen last.
    pub fn meter(&mut self, text: &str) -> Result<Meter, InvalidInput> {
        if let Some(meter) = self.meter.as_ref().filter(|m| m.as_str() == text) {
            return Ok(meter.clone());
        }
        let meter = Meter::parse_as("meter", text)?;
        self.meter = Some(meter.clone());
        Ok(meter)
    }

    /// `Key::parse_as("key", text)`, shared with the first [`PAIRS_MAX`] distinct keys seen.
    pub fn key(&mut self, text: &str) -> Result<Key, InvalidInput> {
        if let Some(key) = self.keys.iter().find(|k| k.as_str() == text) {
            return Ok(key.clone());
        }
        let key = Key::parse_as("key", text)?;
        if self.keys.len() < PAIRS_MAX {
            self.keys.push(key.clone());
        }
        Ok(key)
    }
}

/// Dimension or metadata pairs: at most [`PAIRS_MAX`], checked keys, bounded values without
/// control characters, keys unique. Returned sorted by key, the order core requires.
pub(crate) fn pairs(
    field: &str,
    wire: &[v1::KeyValue],
) -> Result<Vec<(Key, String)>, InvalidInput> {
    pairs_seen(field, key_values(wire), &mut Seen::default())
}

/// The pairs of `wire` as text, for [`pairs_seen`].
pub(crate) fn key_values(wire: &[v1::KeyValue]) -> impl ExactSizeIterator<Item = (&str, &str)> {
    wire.iter()
        .map(|pair| (pair.key.as_str(), pair.value.as_str()))
}

/// [`pairs`], sharing keys with the rest of the request through `seen`; the pairs as (key,
/// value) text, from prost's messages ([`key_values`]) or straight from a request's bytes.
pub(crate) fn pairs_seen<'a>(
    field: &str,
    wire: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
    seen: &mut Seen,
) -> Result<Vec<(Key, String)>, InvalidInput> {
    let mut texts = [("", ""); PAIRS_MAX];
    let texts = checked_pairs(field, wire, seen, &mut texts)?;
    texts
        .iter()
        .map(|&(key, value)| Ok((seen.key(key)?, value.to_owned())))
        .collect()
}

/// An event's dimensions, checked as [`pairs_seen`] checks pairs, shared with the last
/// identical list built on this thread ([`Dimensions::shared`]): a batch's events name the
/// same few dimension sets, and a shared list costs an event no allocation.
pub(crate) fn dimensions_seen<'a>(
    field: &str,
    wire: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
    seen: &mut Seen,
) -> Result<Dimensions, InvalidInput> {
    let mut texts = [("", ""); PAIRS_MAX];
    let texts = checked_pairs(field, wire, seen, &mut texts)?;
    Dimensions::shared(texts, |key| seen.key(key))
}

/// The pairs of `wire` checked (at most [`PAIRS_MAX`], keys valid, values bounded and
/// without control characters, keys unique), sorted by key into `texts`.
fn checked_pairs<'a, 't>(
    field: &str,
    wire: impl ExactSizeIterator<Item = (&'a str, &'a str)>,
    seen: &mut Seen,
    texts: &'t mut [(&'a str, &'a str); PAIRS_MAX],
) -> Result<&'t [(&'a str, &'a str)], InvalidInput> {
    if wire.len() > PAIRS_MAX {
        return Err(InvalidInput::new(
            field,
            format!("has {} pairs; at most {PAIRS_MAX} allowed", wire.len()),
        ));
    }
    let mut len = 0;
    for (index, (key, value)) in wire.enumerate() {
        // Field paths are built only on error: this runs for every event of every batch.
        let item = || format!("{field}[{index}]");
        seen.key(key).map_err(|e| e.within(&item()))?;
        if value.len() > PAIR_VALUE_LEN_MAX {
            return Err(InvalidInput::new(
                format!("{}.value", item()),
                format!(
                    "is {} bytes long; at most {PAIR_VALUE_LEN_MAX} allowed",
                    value.len()
                ),
            ));
        }
        // The control characters of ASCII text are its bytes below 0x20 and 0x7f: checked
        // without decoding characters when the text is ASCII (the usual case).
        let control = if value.is_ascii() {
            value.bytes().any(|b| b < 0x20 || b == 0x7f)
        } else {
            value.chars().any(char::is_control)
        };
        if control {
            return Err(InvalidInput::new(
                format!("{}.value", item()),
                "must not contain control characters",
            ));
        }
        texts[len] = (key, value);
        len += 1;
    }
    let texts = &mut texts[..len];
    // Keys order as their text. A list that arrives sorted (the usual case) costs the sort
    // one pass: it finds the run.
    texts.sort_by(|a, b| a.0.cmp(b.0));
    if let Some(twice) = texts.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(InvalidInput::new(
            field,
            format!(
                "key {:?} appears more than once; keys must be unique",
                twice[0].0
            ),
        ));
    }
    Ok(texts)
}

/// An enum field that must be set to a known value.
pub(crate) fn required_enum<E: TryFrom<i32>>(
    field: &str,
    value: i32,
    unspecified: i32,
    allowed_text: &str,
) -> Result<E, InvalidInput> {
    if value == unspecified {
        return Err(InvalidInput::new(
            field,
            format!("must be set to one of {allowed_text}"),
        ));
    }
    E::try_from(value).map_err(|_| {
        InvalidInput::new(
            field,
            format!("unknown value {value}; expected one of {allowed_text}"),
        )
    })
}

/// A timestamp that must be set (0 is not a real ledger time).
pub(crate) fn required_time_ms(field: &str, value: u64) -> Result<u64, InvalidInput> {
    if value == 0 {
        return Err(InvalidInput::new(
            field,
            "must be set (ms since the Unix epoch)",
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str) -> v1::KeyValue {
        v1::KeyValue {
            key: key.to_string(),
            value: value.to_string(),
        }
    }

    #[test]
    fn pairs_are_sorted_unique_and_bounded() {
        let sorted = pairs(
            "dimensions",
            &[kv("model", "m1"), kv("region", "eu"), kv("a", "")],
        )
        .unwrap();
        let keys: Vec<&str> = sorted.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "model", "region"]);

        let err = pairs("dimensions", &[kv("model", "m1"), kv("model", "m2")]).unwrap_err();
        assert_eq!(err.field, "dimensions");
        assert!(
            err.reason.contains("\"model\" appears more than once"),
            "{err}"
        );

        let err = pairs("dimensions", &[kv("ok", "1"), kv("bad key", "1")]).unwrap_err();
        assert_eq!(err.field, "dimensions[1].key");

        let err = pairs("metadata", &[kv("k", &"v".repeat(PAIR_VALUE_LEN_MAX + 1))]).unwrap_err();
        assert_eq!(err.field, "metadata[0].value");

        let err = pairs("metadata", &[kv("k", "a\nb")]).unwrap_err();
        assert!(err.reason.contains("control"));
        for control in ["\u{7f}", "é\u{85}", "\u{9f}x"] {
            let err = pairs("metadata", &[kv("k", control)]).unwrap_err();
            assert!(err.reason.contains("control"), "{control:?}");
        }
        assert!(pairs("metadata", &[kv("k", "é ~ü")]).is_ok());

        let many: Vec<_> = (0..=PAIRS_MAX).map(|i| kv(&format!("k{i}"), "v")).collect();
        let err = pairs("dimensions", &many).unwrap_err();
        assert_eq!(
            err.to_string(),
            "dimensions: has 17 pairs; at most 16 allowed"
        );
    }

    #[test]
    fn months() {
        assert_eq!(
            parse_month("month", "2026-11").unwrap(),
            Month {
                year: 2026,
                month: 11
            }
        );
        assert_eq!(
            month_text(Month {
                year: 2026,
                month: 1
            }),
            "2026-01"
        );
        for bad in [
            "2026-13", "2026-00", "26-11", "2026-1", "2026/11", "+026-11", "",
        ] {
            let err = parse_month("month", bad).unwrap_err();
            assert_eq!(err.field, "month", "{bad}");
        }
    }
}
