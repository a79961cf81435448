//! The bincode encoding of openraft messages inside the `Raft` peer service's `bytes` fields.
//!
//! One fixed set of options on both ends (bincode 1.3's defaults: fixed-width integers, little
//! endian, trailing bytes allowed) plus a size limit when decoding, so a corrupt or hostile
//! length prefix cannot make a node allocate gigabytes.

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

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(MESSAGE_BYTES_MAX as u64)
}

/// Encodes `value`; `what` names it in the error.
pub fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, CodecError> {
    options().serialize(value).map_err(|source| CodecError {
        action: "encode",
        what,
        source,
    })
}

/// Decodes a `T` from `bytes`; `what` names it in the error.
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, CodecError> {
    options().deserialize(bytes).map_err(|source| CodecError {
        action: "decode",
        what,
        source,
    })
}
