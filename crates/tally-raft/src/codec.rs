//! The bincode encoding of openraft messages inside the `Raft` peer service's `bytes` fields.
//!
//! One fixed set of options on both ends (bincode 1.3's defaults: fixed-width integers, little
//! endian, trailing bytes allowed) plus a size limit: when decoding, so a corrupt or hostile
//! length prefix cannot make a node allocate gigabytes; when encoding, so an oversized append
//! batch is noticed as soon as it passes the limit instead of after allocating all of it.

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::MESSAGE_BYTES_MAX;

#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {what}: {source}")]
pub struct CodecError {
    pub action: &'static str,
    pub what: &'static str,
    #[source]
    pub source: bincode::Error,
}

impl CodecError {
    /// The value did not fit in the size limit.
    pub fn is_size_limit(&self) -> bool {
        matches!(*self.source, bincode::ErrorKind::SizeLimit)
    }
}

fn options(bytes_max: usize) -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(bytes_max as u64)
}

/// Encodes `value` within [`MESSAGE_BYTES_MAX`]; `what` names it in the error.
pub fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, CodecError> {
    encode_within(what, value, MESSAGE_BYTES_MAX)
}

/// Encodes `value` in at most `bytes_max` bytes ([`CodecError::is_size_limit`] otherwise).
pub fn encode_within<T: Serialize>(
    what: &'static str,
    value: &T,
    bytes_max: usize,
) -> Result<Vec<u8>, CodecError> {
    options(bytes_max)
        .serialize(value)
        .map_err(|source| CodecError {
            action: "encode",
            what,
            source,
        })
}

/// How many of `items`, from the first, encode within `bytes_target` together: at least one
/// (when there is one), so a single large item still goes alone.
pub fn prefix_within<T: Serialize>(items: &[T], bytes_target: usize) -> usize {
    let mut total = 0u64;
    for (n, item) in items.iter().enumerate() {
        total += options(usize::MAX)
            .serialized_size(item)
            .unwrap_or(u64::MAX);
        if total > bytes_target as u64 && n > 0 {
            return n;
        }
    }
    items.len()
}

/// Decodes a `T` from `bytes`; `what` names it in the error.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, CodecError> {
    options(MESSAGE_BYTES_MAX)
        .deserialize(bytes)
        .map_err(|source| CodecError {
            action: "decode",
            what,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_within_cuts_at_the_target_but_never_to_nothing() {
        // Each Vec<u8> of 100 bytes encodes to 108 (fixint length prefix).
        let items = vec![vec![0u8; 100]; 10];
        assert_eq!(prefix_within(&items, 1_000), 9);
        assert_eq!(prefix_within(&items, 1_080), 10);
        assert_eq!(
            prefix_within(&items, 10),
            1,
            "one item above the target still goes"
        );
        assert_eq!(prefix_within::<Vec<u8>>(&[], 10), 0);
    }

    #[test]
    fn round_trip_and_limits() {
        let value = (7u64, "seven".to_string(), vec![1u8; 100]);
        let bytes = encode("value", &value).unwrap();
        assert_eq!(
            decode::<(u64, String, Vec<u8>)>("value", &bytes).unwrap(),
            value
        );
        let error = encode_within("value", &value, 50).unwrap_err();
        assert!(error.is_size_limit(), "{error}");
        assert!(error.to_string().starts_with("cannot encode value"));
        let error = decode::<(u64, String, Vec<u8>)>("value", &bytes[..20]).unwrap_err();
        assert!(!error.is_size_limit());
    }

    #[test]
    fn a_hostile_length_prefix_is_refused_without_allocating() {
        // A Vec<u8> whose length prefix claims u64::MAX bytes.
        let mut bytes = u64::MAX.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0; 8]);
        // bincode preallocates cautiously and the limit caps what it may read: an error, not
        // an attempt to allocate 16 EiB.
        let error = decode::<Vec<u8>>("vec", &bytes).unwrap_err();
        assert!(
            error.to_string().starts_with("cannot decode vec"),
            "{error}"
        );
    }
}
