//! The openraft type configuration shared by the store, the peer network and the server.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::sync::Arc;

use crate::codec;
use crate::error::StoreError;

pub type NodeId = u64;

/// What applying one log entry answers to the proposer: one outcome per command, in order.
/// Membership and blank entries answer with no outcomes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryResponse {
    pub outcomes: Vec<tally_core::Outcome>,
}

/// The application data of a log entry: a `tally_core::Entry` together with its encoding
/// (the store's versioned bincode), shared behind an `Arc`.
///
/// Why both: the leader encodes an entry ONCE, when it is proposed; the log record and every
/// AppendEntries message carry those bytes as they are (a copy, not a re-encoding), and
/// openraft's many clones of an entry (replication reads, apply) are a reference count, not a
/// copy of thousands of usage events. A receiver decodes the bytes once, when the message or
/// the record is read, so a message that does not hold a valid entry is refused there, before
/// it reaches the log.
#[derive(Clone)]
pub struct EncodedEntry(Arc<Encoded>);

struct Encoded {
    entry: tally_core::Entry,
    bytes: Vec<u8>,
}

impl EncodedEntry {
    /// Encodes `entry`.
    pub fn new(entry: tally_core::Entry) -> Result<Self, StoreError> {
        let mut bytes = Vec::with_capacity(64);
        crate::binary::encode_entry_into(&entry, &mut bytes)?;
        Ok(EncodedEntry(Arc::new(Encoded { entry, bytes })))
    }

    /// Decodes an entry from the bytes [`EncodedEntry::bytes`] gave.
    pub fn decode(bytes: Vec<u8>) -> Result<Self, StoreError> {
        // Usage entries (nearly every entry) by hand; the rest, and anything the hand-written
        // reader declines, by bincode.
        let entry = match crate::binary::decode_usage_entry(&bytes) {
            Some(entry) => entry,
            None => codec::decode("ledger entry", &bytes)?,
        };
        Ok(EncodedEntry(Arc::new(Encoded { entry, bytes })))
    }

    pub fn entry(&self) -> &tally_core::Entry {
        &self.0.entry
    }

    /// The encoding: what the log record and the peer messages carry.
    pub fn bytes(&self) -> &[u8] {
        &self.0.bytes
    }
}

impl From<tally_core::Entry> for EncodedEntry {
    /// For tests and tools. Panics only if the entry cannot be encoded, which for an entry
    /// built in memory means a bug (bincode encodes every `tally_core::Entry`).
    fn from(entry: tally_core::Entry) -> Self {
        EncodedEntry::new(entry).expect("a tally_core::Entry always encodes")
    }
}

impl fmt::Debug for EncodedEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.entry.fmt(f)
    }
}

impl PartialEq for EncodedEntry {
    fn eq(&self, other: &Self) -> bool {
        // The encoding is deterministic, so equal entries have equal bytes.
        self.0.bytes == other.0.bytes
    }
}

impl Eq for EncodedEntry {}

impl Serialize for EncodedEntry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0.bytes)
    }
}

impl<'de> Deserialize<'de> for EncodedEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the bytes of an encoded ledger entry")
            }
            fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
                Ok(bytes.to_vec())
            }
            fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(bytes)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(byte) = seq.next_element::<u8>()? {
                    bytes.push(byte);
                }
                Ok(bytes)
            }
        }
        let bytes = deserializer.deserialize_byte_buf(BytesVisitor)?;
        EncodedEntry::decode(bytes).map_err(de::Error::custom)
    }
}

openraft::declare_raft_types!(
    /// Tally's Raft types: the log carries `tally_core::Entry`s, encoded once ([`EncodedEntry`]).
    pub TypeConfig:
        D = EncodedEntry,
        R = EntryResponse,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

#[cfg(test)]
mod tests {
    use super::*;
    use tally_core::{AssetCode, AssetSpec, Command, Entry};

    fn entry() -> Entry {
        Entry {
            at_ms: 1_700_000_000_000,
            commands: vec![
                Command::CreateAsset(AssetSpec {
                    code: AssetCode::new("USD").unwrap(),
                    scale: 2,
                }),
                Command::Tick,
            ],
        }
    }

    #[test]
    fn carries_its_bytes_through_an_envelope_unchanged() {
        let encoded = EncodedEntry::new(entry()).unwrap();
        assert_eq!(encoded.entry(), &entry());
        // Inside an openraft log entry, with the store's codec: the bytes travel as they are.
        let log_entry = openraft::Entry::<TypeConfig> {
            log_id: Default::default(),
            payload: openraft::EntryPayload::Normal(encoded.clone()),
        };
        let wire = codec::encode("log entry", &log_entry).unwrap();
        let back: openraft::Entry<TypeConfig> = codec::decode("log entry", &wire).unwrap();
        match back.payload {
            openraft::EntryPayload::Normal(data) => {
                assert_eq!(data.entry(), &entry());
                assert_eq!(data.bytes(), encoded.bytes());
                assert_eq!(data, encoded);
            }
            other => panic!("expected a normal entry, got {other:?}"),
        }
    }

    #[test]
    fn bytes_that_are_not_an_entry_are_refused_when_read() {
        let encoded = EncodedEntry::new(entry()).unwrap();
        let mut bytes = encoded.bytes().to_vec();
        bytes.truncate(bytes.len() - 1);
        assert!(EncodedEntry::decode(bytes).is_err());
        let mut future = encoded.bytes().to_vec();
        future[0] += 1;
        let error = EncodedEntry::decode(future).unwrap_err();
        assert!(
            matches!(error, StoreError::UnknownVersion { .. }),
            "{error}"
        );
        // And through serde (what a peer message or a log record goes through).
        let wire = codec::encode("bytes", &serde_bytes_of(&[1, 2, 3])).unwrap();
        assert!(codec::decode::<EncodedEntry>("ledger entry", &wire).is_err());
    }

    /// A serde byte string (what an `EncodedEntry` serializes as), for feeding junk.
    fn serde_bytes_of(bytes: &[u8]) -> impl Serialize + '_ {
        struct Bytes<'a>(&'a [u8]);
        impl Serialize for Bytes<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_bytes(self.0)
            }
        }
        Bytes(bytes)
    }
}
