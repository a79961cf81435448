//! Parsers for flag values (times, durations, amounts, ids, `K=V` pairs). Each is a clap value
//! parser, so a bad value is refused before any request with a message naming the flag.

use tally_core::{AccountId, Amount, AssetCode, BookId, EventId, GrantId, HoldId, Key, Meter};

/// RFC 3339 time (`2026-01-31T12:00:00Z`, `2026-01-31T13:00:00.250+01:00`) -> ms since epoch.
pub fn parse_time(text: &str) -> Result<u64, String> {
    let bad = || {
        let year = text.trim().get(..5).and_then(|head| head.strip_suffix('-'));
        if year
            .and_then(|year| year.parse::<u32>().ok())
            .is_some_and(|year| year < 1970)
        {
            return format!(
                "{text:?} is before 1970-01-01T00:00:00Z, the earliest time the ledger takes"
            );
        }
        format!(
            "{text:?} is not an RFC 3339 time; expected e.g. 2026-01-31T12:00:00Z or \
             2026-01-31T13:00:00+01:00"
        )
    };
    let text = text.trim();
    if let Some(ms) = tally_core::parse_utc(text) {
        return Ok(ms);
    }
    // An explicit offset other than UTC: parse the local time as if UTC, then shift.
    let split = text.len().checked_sub(6).ok_or_else(bad)?;
    // A byte index: text that is not ASCII there is not a time (and must not be split there).
    if !text.is_char_boundary(split) {
        return Err(bad());
    }
    let (local, offset) = text.split_at(split);
    let sign: i64 = match offset.as_bytes().first() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return Err(bad()),
    };
    let (hours, minutes) = offset[1..].split_once(':').ok_or_else(bad)?;
    if hours.len() != 2 || minutes.len() != 2 {
        return Err(bad());
    }
    let hours: i64 = hours.parse().map_err(|_| bad())?;
    let minutes: i64 = minutes.parse().map_err(|_| bad())?;
    if hours > 23 || minutes > 59 {
        return Err(bad());
    }
    let as_utc = tally_core::parse_utc(&format!("{local}Z")).ok_or_else(bad)? as i64;
    let ms = as_utc - sign * (hours * 60 + minutes) * 60_000;
    u64::try_from(ms).map_err(|_| bad())
}

/// A node id: a whole number from 1.
pub fn parse_node_id(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(0) => Err("0 is not a node id; node ids start at 1".to_string()),
        Ok(id) => Ok(id),
        Err(_) => Err(format!("{text:?} is not a node id (a whole number from 1)")),
    }
}

/// `90s`, `10m`, `24h`, `2d`, `500ms` -> milliseconds (> 0).
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a duration; expected e.g. 90s, 10m, 24h");
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit; expected e.g. 90s, 10m, 24h"))?;
    let (number, unit) = text.split_at(digits_end);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    let ms = number
        .checked_mul(unit_ms)
        .ok_or_else(|| format!("{text:?} is too long"))?;
    if ms == 0 {
        return Err(format!("{text:?} must be longer than zero"));
    }
    Ok(ms)
}

/// An exact decimal amount (any sign), in canonical form.
pub fn parse_amount(text: &str) -> Result<String, String> {
    Amount::parse("value", text)
        .map(|amount| amount.to_string())
        .map_err(|error| error.reason)
}

/// An exact decimal amount >= 0.
pub fn parse_amount_non_negative(text: &str) -> Result<String, String> {
    Amount::parse_non_negative("value", text)
        .map(|amount| amount.to_string())
        .map_err(|error| error.reason)
}

/// An exact decimal amount > 0.
pub fn parse_amount_positive(text: &str) -> Result<String, String> {
    Amount::parse_positive("value", text)
        .map(|amount| amount.to_string())
        .map_err(|error| error.reason)
}

macro_rules! id_parser {
    ($name:ident, $type:ty) => {
        pub fn $name(text: &str) -> Result<String, String> {
            <$type>::new(text)
                .map(|_| text.to_string())
                .map_err(|error| error.reason)
        }
    };
}

id_parser!(parse_account_id, AccountId);
id_parser!(parse_asset_code, AssetCode);
id_parser!(parse_book_id, BookId);
id_parser!(parse_event_id, EventId);
id_parser!(parse_grant_id, GrantId);
id_parser!(parse_hold_id, HoldId);
id_parser!(parse_meter, Meter);

/// `KEY=VALUE`, the key checked like every dimension and metadata key.
pub fn parse_pair(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} must be KEY=VALUE"))?;
    Key::new(key).map_err(|error| format!("key {key:?} {}", error.reason))?;
    Ok((key.to_string(), value.to_string()))
}

/// `YYYY-MM`.
pub fn parse_month(text: &str) -> Result<String, String> {
    tally_proto::convert::parse_month("month", text)
        .map(|_| text.to_string())
        .map_err(|error| error.reason)
}

/// A host:port endpoint.
pub fn parse_endpoint(text: &str) -> Result<String, String> {
    tally_client::normalize_endpoint(text)
}

/// A JSON object of strings whose keys must be unique (`serde(deserialize_with)`): serde_json
/// alone keeps the last of two equal keys, so `{"model": "large", "model": "small"}` would
/// price an event or match a rate by whichever came last, silently.
pub fn unique_keys<'de, D>(
    deserializer: D,
) -> Result<std::collections::BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct UniqueKeys;

    impl<'de> serde::de::Visitor<'de> for UniqueKeys {
        type Value = std::collections::BTreeMap<String, String>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
            formatter.write_str("an object of string values")
        }

        fn visit_map<A>(self, mut map: A) -> Result<Self::Value, A::Error>
        where
            A: serde::de::MapAccess<'de>,
        {
            let mut pairs = std::collections::BTreeMap::new();
            while let Some((key, value)) = map.next_entry::<String, String>()? {
                if pairs.contains_key(&key) {
                    return Err(serde::de::Error::custom(format!(
                        "key {key:?} appears more than once; keys must be unique"
                    )));
                }
                pairs.insert(key, value);
            }
            Ok(pairs)
        }
    }

    deserializer.deserialize_map(UniqueKeys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        let utc = parse_time("2026-01-31T12:00:00Z").unwrap();
        assert_eq!(tally_core::format_utc(utc), "2026-01-31T12:00:00.000Z");
        assert_eq!(parse_time("2026-01-31T13:00:00+01:00").unwrap(), utc);
        assert_eq!(parse_time("2026-01-31T07:30:00-04:30").unwrap(), utc);
        assert_eq!(parse_time("2026-01-31T12:00:00.250Z").unwrap(), utc + 250);
        for bad in [
            "2026-01-31",
            "2026-01-31 12:00:00Z",
            "tomorrow",
            "2026-02-30T00:00:00Z",
            "2026-01-31T12:00:00+1:00",
            "",
        ] {
            let error = parse_time(bad).unwrap_err();
            assert!(error.contains("RFC 3339"), "{bad}: {error}");
        }
        // Well-formed but before the epoch: the range is the reason, not the form.
        for early in ["1969-12-31T23:59:59Z", "0001-01-01T00:00:00Z"] {
            let error = parse_time(early).unwrap_err();
            assert!(error.contains("is before 1970-01-01"), "{early}: {error}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), 90_000);
        assert_eq!(parse_duration("10m").unwrap(), 600_000);
        assert_eq!(parse_duration("24h").unwrap(), 86_400_000);
        assert_eq!(parse_duration("250ms").unwrap(), 250);
        for bad in ["10", "m", "1.5h", "10 m", "10x", "0s", "-5s", ""] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn amounts_ids_pairs() {
        assert_eq!(parse_amount("1.50").unwrap(), "1.5");
        assert_eq!(parse_amount("-3").unwrap(), "-3");
        assert!(parse_amount("1e3").is_err());
        assert!(parse_amount("abc").is_err());
        assert!(parse_amount_positive("0").is_err());
        assert!(parse_amount_non_negative("-1").is_err());
        assert_eq!(parse_amount_non_negative("0").unwrap(), "0");
        assert!(parse_account_id("acme").is_ok());
        assert!(parse_account_id("bad id").is_err());
        assert!(parse_asset_code("usd").is_err());
        assert!(parse_asset_code("USD").is_ok());
        assert_eq!(
            parse_pair("model=m1").unwrap(),
            ("model".to_string(), "m1".to_string())
        );
        assert!(parse_pair("model").is_err());
        assert!(parse_pair("bad key=1").is_err());
        assert!(parse_month("2026-11").is_ok());
        assert!(parse_month("2026-13").is_err());
    }
}
