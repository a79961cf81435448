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
    /// Set while a snapshot is written account by account (see [`Accounts::freeze`]).
    frozen: Option<Box<Frozen>>,
}

/// A snapshot's hold on the accounts that existed when it began: those it has not written
/// yet are kept as they were, by copying one the first time it is changed.
#[derive(Clone)]
struct Frozen {
    /// Tells one snapshot's hold from another's.
    build: u64,
    /// The first ordinal not written yet.
    next: u32,
    /// The number of accounts when the snapshot began.
    end: u32,
    /// Accounts changed since, as they were then.
    saved: std::collections::BTreeMap<u32, Box<Account>>,
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
        let ordinal = self.ordinal(id)?;
        Some(self.by_ordinal_mut(ordinal))
    }

    /// The account with `ordinal` (which exists: ordinals come from this table).
    pub fn by_ordinal(&self, ordinal: u32) -> &Account {
        &self.entries[ordinal as usize].1
    }

    /// Every change to an account goes through here (or [`Self::get_mut`], which calls it),
    /// so a snapshot being written keeps the account as it was.
    pub fn by_ordinal_mut(&mut self, ordinal: u32) -> &mut Account {
        if let Some(frozen) = &mut self.frozen {
            if (frozen.next..frozen.end).contains(&ordinal) {
                frozen
                    .saved
                    .entry(ordinal)
                    .or_insert_with(|| self.entries[ordinal as usize].1.clone());
            }
        }
        &mut self.entries[ordinal as usize].1
    }

    /// Starts writing the accounts as they are now for snapshot `build`, to be written with
    /// [`Self::write_frozen`] while they go on changing (a later call replaces an earlier hold).
    pub fn freeze(&mut self, build: u64) {
        self.frozen = Some(Box::new(Frozen {
            build,
            next: 0,
            end: self.entries.len() as u32,
            saved: Default::default(),
        }));
    }

    /// Ends snapshot `build`'s hold, if it still has it.
    pub fn thaw(&mut self, build: u64) {
        if self
            .frozen
            .as_ref()
            .is_some_and(|frozen| frozen.build == build)
        {
            self.frozen = None;
        }
    }

    /// Hands the next (up to) `max` accounts of snapshot `build`, by ordinal and as they
    /// were when it began, to `write`. `Ok(None)` when the hold is gone (another snapshot
    /// began, or the table was replaced); `Ok(Some(true))` once the last one was written.
    pub fn write_frozen<E>(
        &mut self,
        build: u64,
        max: u32,
        mut write: impl FnMut(&AccountId, &Account) -> Result<(), E>,
    ) -> Result<Option<bool>, E> {
        let Some(frozen) = self.frozen.as_mut().filter(|frozen| frozen.build == build) else {
            return Ok(None);
        };
        let stop = frozen.end.min(frozen.next.saturating_add(max));
        for ordinal in frozen.next..stop {
            let (id, live) = &self.entries[ordinal as usize];
            match frozen.saved.remove(&ordinal) {
                Some(saved) => write(id, &saved)?,
                None => write(id, live)?,
            }
            frozen.next = ordinal + 1;
        }
        let done = frozen.next == frozen.end;
        if done {
            self.frozen = None;
        }
        Ok(Some(done))
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
