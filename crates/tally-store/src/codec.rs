//! The on-disk encoding of every value the store writes: one format-version byte, then the
//! value in bincode's compact (varint) form. Keys are big-endian so that sled's byte order is
//! numeric order.

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::StoreError;

/// Version of the value encoding. A value written by a newer (or older) build is refused with
/// [`StoreError::UnknownVersion`] rather than misread. Version 2: a log entry's ledger entry is
/// a byte string holding its own versioned encoding ([`crate::EncodedEntry`]). Version 3:
/// amounts in their compact form (1 to 13 bytes, see `tally_core::Amount`'s `Serialize`).
pub(crate) const FORMAT_VERSION: u8 = 3;

/// The oldest value version this build reads: version 2 differs only in its amounts (16 fixed
/// bytes each), which the amount decoder tells by their length. Data written before this
/// build (its log, journal and snapshots) stays readable.
pub(crate) const FORMAT_VERSION_READ_MIN: u8 = 2;

/// Largest value the store will decode: a log entry carries at most one batch of usage events,
/// far below this; anything larger is corruption, not data.
pub(crate) const VALUE_BYTES_MAX: u64 = 256 * 1024 * 1024;

fn options() -> impl Options {
    bincode::DefaultOptions::new().with_limit(VALUE_BYTES_MAX)
}

pub(crate) fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(64);
    encode_into(what, value, &mut out)?;
    Ok(out)
}

/// [`encode`], appended to `out`.
pub(crate) fn encode_into<T: Serialize>(
    what: &'static str,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), StoreError> {
    out.push(FORMAT_VERSION);
    encode_body_into(what, value, out)
}

/// `value`'s bincode bytes alone (no version byte), appended to `out`: for the writers in
/// `binary` that write the rest of a value by hand.
pub(crate) fn encode_body_into<T: Serialize>(
    what: &'static str,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), StoreError> {
    options()
        .serialize_into(&mut *out, value)
        .map_err(|e| StoreError::Encode {
            what,
            reason: e.to_string(),
        })
}

pub(crate) fn decode<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    let (&version, body) = bytes.split_first().ok_or_else(|| StoreError::Corrupt {
        what,
        reason: "empty value".to_string(),
    })?;
    if !(FORMAT_VERSION_READ_MIN..=FORMAT_VERSION).contains(&version) {
        return Err(StoreError::UnknownVersion {
            what,
            version,
            supported: FORMAT_VERSION,
        });
    }
    options()
        .deserialize(body)
        .map_err(|e| StoreError::Corrupt {
            what,
            reason: e.to_string(),
        })
}

pub(crate) fn u64_key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

pub(crate) fn key_u64(what: &'static str, key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| StoreError::Corrupt {
        what,
        reason: format!("key is {} bytes, expected 8", key.len()),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_check() {
        let bytes = encode("test value", &(7u64, "x".to_string())).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        let back: (u64, String) = decode("test value", &bytes).unwrap();
        assert_eq!(back, (7, "x".to_string()));

        let mut future = bytes.clone();
        future[0] = FORMAT_VERSION + 1;
        let err = decode::<(u64, String)>("test value", &future).unwrap_err();
        assert!(
            matches!(err, StoreError::UnknownVersion { version, .. } if version == FORMAT_VERSION + 1)
        );

        let mut past = bytes.clone();
        past[0] = FORMAT_VERSION_READ_MIN - 1;
        let err = decode::<(u64, String)>("test value", &past).unwrap_err();
        assert!(
            matches!(err, StoreError::UnknownVersion { version, .. } if version == FORMAT_VERSION_READ_MIN - 1)
        );

        assert!(decode::<(u64, String)>("test value", &[]).is_err());
        assert!(decode::<(u64, String)>("test value", &bytes[..bytes.len() - 1]).is_err());
    }

    /// Ids decode from the text in place and are checked as on the API: a stored id that
    /// breaks the id rules is refused, naming the field and the reason.
    #[test]
    fn ids_decode_checked() {
        use tally_core::{AccountId, EventId};
        let good = encode(
            "ids",
            &(AccountId::new("acme-1").unwrap(), "evt 1".to_string()),
        )
        .unwrap();
        let (account, event): (AccountId, EventId) = decode("ids", &good).unwrap();
        assert_eq!((account.as_str(), event.as_str()), ("acme-1", "evt 1"));

        let bad = encode("ids", &("acme 1".to_string(), "evt".to_string())).unwrap();
        let err = decode::<(AccountId, EventId)>("ids", &bad).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("account") && text.contains("' '"), "{text}");
        let empty = encode("ids", &(String::new(), "evt".to_string())).unwrap();
        assert!(decode::<(AccountId, EventId)>("ids", &empty).is_err());
    }

    #[test]
    fn keys_sort_numerically() {
        assert!(u64_key(2) < u64_key(256));
        assert_eq!(key_u64("k", &u64_key(42)).unwrap(), 42);
        assert!(key_u64("k", &[1, 2]).is_err());
    }
}

#[cfg(test)]
mod openraft_types {
    use super::*;
    use openraft::Vote;

    #[test]
    fn vote_round_trips() {
        let v = Vote::new(1u64, 0u64);
        let bytes = encode("vote", &v).unwrap();
        let back: Vote<u64> = decode("vote", &bytes).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn values_of_the_previous_version_with_fixed_amounts_are_still_read() {
        let amount = tally_core::Amount::parse("amount", "-12.345").unwrap();
        // This build writes the compact form: a head byte and two mantissa bytes.
        let now = encode("test value", &(7u64, amount)).unwrap();
        assert_eq!(now, [FORMAT_VERSION, 7, 3, (3 << 1) | 1, 0x39, 0x30]);
        // Version 2 wrote every amount as the 16 bytes of its decimal.
        let mut then = vec![FORMAT_VERSION_READ_MIN, 7, 16];
        then.extend_from_slice(&amount.to_bytes());
        let back: (u64, tally_core::Amount) = decode("test value", &then).unwrap();
        assert_eq!(back, (7, amount));
    }
}
