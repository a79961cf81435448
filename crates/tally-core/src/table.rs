//! The account table: accounts by ordinal (creation order), found by id through a hash index.
//!
//! Settling an event looks its account up by id; in an ordered map of a million ids that is
//! twenty string comparisons and as many cache misses. The index here holds only ordinals
//! (4 bytes a slot) and compares the one candidate id. Iteration, encodings and the state hash
//! go by ordinal, never through the index, and decoding rebuilds the index; its hash function
//! is fixed (the crate draws no randomness).

use hashbrown::HashTable;
use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::account::Account;
use crate::ids::AccountId;

/// A fixed, fast, non-cryptographic 64-bit hash: multiply-fold rounds over 8-byte words.
/// Fixed so replicas agree wherever a hash is kept in the state (the dedup fingerprint).
pub(crate) struct FoldHasher(u64);

const K1: u64 = 0x9E37_79B9_7F4A_7C15;
const K2: u64 = 0xD6E8_FEB8_6659_FD93;

fn fold(a: u64, b: u64) -> u64 {
    let product = (a as u128) * (b as u128);
    (product as u64) ^ ((product >> 64) as u64)
}

impl FoldHasher {
    pub fn new(tag: u32) -> Self {
        FoldHasher(fold(tag as u64 ^ K2, K1))
    }

    pub fn u64(&mut self, value: u64) {
        self.0 = fold(self.0 ^ value, K1);
    }

    /// Length first, so consecutive fields never run into each other.
    pub fn bytes(&mut self, bytes: &[u8]) {
        self.u64(bytes.len() as u64);
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.u64(u64::from_le_bytes(word.try_into().expect("8 bytes")));
        }
        let tail = words.remainder();
        if !tail.is_empty() {
            // Byte by byte: at most 7, cheaper than a call to copy a slice of unknown length.
            let word = tail
                .iter()
                .enumerate()
                .fold(0u64, |word, (i, byte)| word | (*byte as u64) << (8 * i));
            self.u64(word);
        }
    }

    /// The amount's value (its canonical form: trailing zeros do not count).
    pub fn amount(&mut self, amount: crate::money::Amount) {
        let (scale, negative, mantissa) = amount.canonical_parts();
        self.u64((scale as u64) << 1 | negative as u64);
        self.u64(mantissa as u64);
        self.u64((mantissa >> 64) as u64);
    }

    pub fn finish(self) -> u64 {
        fold(self.0, K2)
    }
}

/// [`FoldHasher`] of `tag` and `bytes`.
pub(crate) fn hash_bytes(tag: u32, bytes: &[u8]) -> u64 {
    let mut hasher = FoldHasher::new(tag);
    hasher.bytes(bytes);
    hasher.finish()
}

fn id_hash(id: &AccountId) -> u64 {
    hash_bytes(0, id.as_str().as_bytes())
}

#[derive(Clone, Default)]
pub(crate) struct Accounts {
    /// (id, account) by ordinal: a lookup reads the id and the account's pointer from one
    /// place. Boxed on purpose: the list grows by doubling, and its spare capacity should cost
    /// a pointer per slot, not a whole account.
    entries: Vec<(AccountId, Box<Account>)>,
    index: HashTable<u32>,
}

impl PartialEq for Accounts {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Eq for Accounts {}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Accounts {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn ordinal(&self, id: &AccountId) -> Option<u32> {
        self.index
            .find(id_hash(id), |&ordinal| {
                &self.entries[ordinal as usize].0 == id
            })
            .copied()
    }

    pub fn get(&self, id: &AccountId) -> Option<&Account> {
        self.ordinal(id)
            .map(|ordinal| &*self.entries[ordinal as usize].1)
    }

    pub fn get_mut(&mut self, id: &AccountId) -> Option<&mut Account> {
        self.ordinal(id)
            .map(|ordinal| &mut *self.entries[ordinal as usize].1)
    }

    /// The account with `ordinal` (which exists: ordinals come from this table).
    pub fn by_ordinal(&self, ordinal: u32) -> &Account {
        &self.entries[ordinal as usize].1
    }

    pub fn by_ordinal_mut(&mut self, ordinal: u32) -> &mut Account {
        &mut self.entries[ordinal as usize].1
    }

    /// The id of the account with `ordinal`.
    pub fn id(&self, ordinal: u32) -> &AccountId {
        &self.entries[ordinal as usize].0
    }

    /// The ordinal the next account gets; `None` when ordinals ran out.
    pub fn next_ordinal(&self) -> Option<u32> {
        u32::try_from(self.entries.len()).ok()
    }

    /// Adds a new account (its id is not in the table; its ordinal is [`Self::next_ordinal`]).
    pub fn push(&mut self, id: AccountId, account: Box<Account>) {
        debug_assert_eq!(Some(account.ordinal), self.next_ordinal());
        let ordinal = account.ordinal;
        let hash = id_hash(&id);
        self.entries.push((id, account));
        let entries = &self.entries;
        self.index.insert_unique(hash, ordinal, |&ordinal| {
            id_hash(&entries[ordinal as usize].0)
        });
    }

    /// Every account with its id, by ordinal.
    pub fn iter(&self) -> impl Iterator<Item = (&AccountId, &Account)> {
        self.entries.iter().map(|(id, account)| (id, &**account))
    }

    pub fn values(&self) -> impl Iterator<Item = &Account> {
        self.entries.iter().map(|(_, account)| &**account)
    }
}

/// Serialized as the list of (id, account), by ordinal.
impl Serialize for Accounts {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.entries.len()))?;
        for pair in self.iter() {
            seq.serialize_element(&pair)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Accounts {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AccountsVisitor;
        impl<'de> Visitor<'de> for AccountsVisitor {
            type Value = Accounts;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of accounts by ordinal")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Accounts, A::Error> {
                let mut table = Accounts::default();
                while let Some((id, account)) = seq.next_element::<(AccountId, Box<Account>)>()? {
                    if Some(account.ordinal) != table.next_ordinal() {
                        return Err(serde::de::Error::custom(format!(
                            "account {id} has ordinal {} at position {}",
                            account.ordinal,
                            table.len()
                        )));
                    }
                    if table.ordinal(&id).is_some() {
                        return Err(serde::de::Error::custom(format!(
                            "account {id} is listed twice"
                        )));
                    }
                    table.push(id, account);
                }
                Ok(table)
            }
        }
        deserializer.deserialize_seq(AccountsVisitor)
    }
}
