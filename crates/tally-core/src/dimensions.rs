//! An event's dimensions: its (key, value) pairs, sorted by key, held as one shared, immutable
//! list.
//!
//! The events of a workload name the same few dimension sets again and again (a model and a
//! region), so a list built from text identical to the last one built on this thread reuses
//! its allocation (see `share`): converting a request or decoding a log entry then allocates
//! nothing for an event's dimensions, where a list of owned pairs took three allocations per
//! event (the list and each value), on every node, and as many frees after the apply. No
//! list is allocated for an event without dimensions.
//!
//! Invisible otherwise: a list compares, hashes, prints and serializes as the slice of its
//! pairs (bincode's bytes are those of a `Vec<(Key, String)>`), whether shared or not.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::command::{PAIRS_MAX, PAIR_VALUE_LEN_MAX};
use crate::ids::Key;
use crate::share::{shared_or_err, Recent};
use crate::table::FoldHasher;
use crate::validate::check_pairs;

/// (key, value) pairs, sorted by key, keys unique (the constructors keep the order given; the
/// apply checks it, as it checks the values).
#[derive(Clone, Default)]
pub struct Dimensions(Option<Arc<List>>);

/// A list and whether it passes the apply's check of an event's dimensions, found once when
/// the list is built: a shared list is checked once, not once per event that names it (the
/// check was 2.4% of the ledger's instructions per event). The check depends on the pairs
/// alone, so every node finds the same.
struct List {
    pairs: Box<[(Key, String)]>,
    checked: bool,
    /// Which rate of a list of rates matches these pairs, for the last few lists of rates
    /// asked about (see [`Dimensions::memo`]): each word is the rates' stamp times 2^16 plus
    /// the rate's index + 1 (0: no rate matches), or 0 when unused.
    memo: [AtomicU64; MEMO_SLOTS],
}

/// Lists of rates a dimension list remembers its match in: the price book's and the cost
/// book's for a meter or two.
const MEMO_SLOTS: usize = 4;

/// Stamps and rate indexes a memo word holds (larger ones are not remembered).
const STAMP_LIMIT: u64 = 1 << 48;
const INDEX_BITS: u32 = 16;

impl List {
    fn new(pairs: Vec<(Key, String)>) -> Arc<List> {
        let checked = check_pairs("dimensions", &pairs, PAIRS_MAX, PAIR_VALUE_LEN_MAX).is_ok();
        Arc::new(List {
            pairs: pairs.into_boxed_slice(),
            checked,
            memo: Default::default(),
        })
    }
}

thread_local! {
    static LISTS: Recent<List> = Recent::new();
}

impl Dimensions {
    /// The list of `pairs`, as given.
    pub fn new(pairs: Vec<(Key, String)>) -> Dimensions {
        if pairs.is_empty() {
            Dimensions(None)
        } else {
            Dimensions(Some(List::new(pairs)))
        }
    }

    /// The list whose pairs have the text of `texts`, in that order: the last identical list
    /// built on this thread when there is one (found by comparing the text, so it is always
    /// equal to `texts`), else a new one, its keys made by `key` and its values copied, then
    /// remembered; a key that `key` refuses returns its error and nothing is remembered.
    pub fn shared<E>(
        texts: &[(&str, &str)],
        mut key: impl FnMut(&str) -> Result<Key, E>,
    ) -> Result<Dimensions, E> {
        if texts.is_empty() {
            return Ok(Dimensions(None));
        }
        let mut hasher = FoldHasher::new(2);
        for (key, value) in texts {
            hasher.u64(key.len() as u64);
            hasher.bytes(key.as_bytes());
            hasher.u64(value.len() as u64);
            hasher.bytes(value.as_bytes());
        }
        let list = shared_or_err(
            &LISTS,
            hasher.finish(),
            |held| {
                held.pairs.len() == texts.len()
                    && held
                        .pairs
                        .iter()
                        .zip(texts)
                        .all(|((k, v), (key, value))| k.as_str() == *key && v == value)
            },
            || {
                texts
                    .iter()
                    .map(|&(k, value)| Ok((key(k)?, value.to_owned())))
                    .collect::<Result<Vec<_>, E>>()
                    .map(List::new)
            },
        )?;
        Ok(Dimensions(Some(list)))
    }

    pub fn as_slice(&self) -> &[(Key, String)] {
        self.0.as_deref().map_or(&[], |list| &list.pairs)
    }

    /// True when the pairs pass [`check_pairs`] as the apply checks an event's dimensions
    /// (at most [`PAIRS_MAX`], keys sorted and unique, values bounded and without control
    /// characters); found when the list was built.
    pub(crate) fn checked(&self) -> bool {
        self.0.as_ref().is_none_or(|list| list.checked)
    }

    /// What [`Self::remember`] last kept for the list of rates stamped `stamp`: `Some(None)`
    /// when none of its rates matches, `None` when nothing is remembered (always, for an
    /// event without dimensions). A memo word is read and written whole, so threads sharing
    /// the list can only find what one of them remembered, and what is remembered is a
    /// function of the two lists alone: replicas find the same rates with or without it.
    pub(crate) fn memo(&self, stamp: u64) -> Option<Option<usize>> {
        let list = self.0.as_ref()?;
        list.memo.iter().find_map(|word| {
            let word = word.load(AtomicOrdering::Relaxed);
            (word != 0 && word >> INDEX_BITS == stamp).then(|| {
                let code = (word & ((1 << INDEX_BITS) - 1)) as usize;
                code.checked_sub(1)
            })
        })
    }

    /// Remembers that the rate at `index` (`None`: no rate) of the list of rates stamped
    /// `stamp` matches these pairs: in an unused word, else in the word `stamp` picks.
    pub(crate) fn remember(&self, stamp: u64, index: Option<usize>) {
        let Some(list) = self.0.as_ref() else {
            return;
        };
        let code = index.map_or(0, |index| index as u64 + 1);
        if code >= 1 << INDEX_BITS || stamp == 0 || stamp >= STAMP_LIMIT {
            return;
        }
        let slot = list
            .memo
            .iter()
            .find(|word| word.load(AtomicOrdering::Relaxed) == 0)
            .unwrap_or(&list.memo[(stamp % MEMO_SLOTS as u64) as usize]);
        slot.store(stamp << INDEX_BITS | code, AtomicOrdering::Relaxed);
    }
}

/// The last few dimension lists a reader made, each with the bytes it made it from: an
/// entry's encoding of the list (tally-store's decoder) or a request's dimension entries
/// (tally-proto's batch conversion). Both encodings are self-delimiting (each text's length
/// before its bytes), so the same bytes make the same list and pass the same checks: a reader
/// that meets bytes it remembers takes the list instead of reading, checking and looking up
/// its texts again (events repeat a few dimension sets).
#[derive(Default)]
pub struct RecentDimensions<'a> {
    lists: [(&'a [u8], Dimensions); RECENT_DIMENSIONS],
    /// The slot the next list replaces (oldest first).
    next: usize,
}

/// Lists a [`RecentDimensions`] holds: more than the sets a workload's events usually name.
const RECENT_DIMENSIONS: usize = 8;

impl<'a> RecentDimensions<'a> {
    /// The list made from exactly `bytes`.
    pub fn made_from(&self, bytes: &[u8]) -> Option<&Dimensions> {
        self.lists
            .iter()
            .find(|(held, _)| !held.is_empty() && *held == bytes)
            .map(|(_, list)| list)
    }

    /// A list made from bytes that `bytes` begins with, and how many bytes those are.
    pub fn made_from_start_of(&self, bytes: &[u8]) -> Option<(usize, &Dimensions)> {
        self.lists
            .iter()
            .find(|(held, _)| !held.is_empty() && bytes.starts_with(held))
            .map(|(held, list)| (held.len(), list))
    }

    /// Remembers `list` as made from `bytes`, in place of the oldest (empty bytes are never
    /// found).
    pub fn remember(&mut self, bytes: &'a [u8], list: &Dimensions) {
        self.lists[self.next] = (bytes, list.clone());
        self.next = (self.next + 1) % RECENT_DIMENSIONS;
    }
}

impl Deref for Dimensions {
    type Target = [(Key, String)];

    fn deref(&self) -> &[(Key, String)] {
        self.as_slice()
    }
}

impl<'a> IntoIterator for &'a Dimensions {
    type Item = &'a (Key, String);
    type IntoIter = std::slice::Iter<'a, (Key, String)>;

    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

impl From<Vec<(Key, String)>> for Dimensions {
    fn from(pairs: Vec<(Key, String)>) -> Dimensions {
        Dimensions::new(pairs)
    }
}

/// Equal when the pairs are (one shared list is equal without comparing them).
impl PartialEq for Dimensions {
    fn eq(&self, other: &Dimensions) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) if Arc::ptr_eq(a, b) => true,
            _ => self.as_slice() == other.as_slice(),
        }
    }
}

impl Eq for Dimensions {}

/// The slice's hash, as the `Vec` it replaced hashed.
impl Hash for Dimensions {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state)
    }
}

impl fmt::Debug for Dimensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_slice().fmt(f)
    }
}

impl Serialize for Dimensions {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.as_slice().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Dimensions {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<(Key, String)>::deserialize(deserializer).map(Dimensions::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> Key {
        Key::new(text).unwrap()
    }

    fn checked_key(text: &str) -> Result<Key, String> {
        Key::new(text).map_err(|e| e.to_string())
    }

    #[test]
    fn identical_text_shares_one_list_and_different_text_never_does() {
        let texts = [("model", "m1"), ("region", "eu")];
        let a = Dimensions::shared(&texts, checked_key).unwrap();
        let b = Dimensions::shared(&texts, |_| -> Result<Key, String> {
            panic!("an identical list is remembered")
        })
        .unwrap();
        assert!(Arc::ptr_eq(a.0.as_ref().unwrap(), b.0.as_ref().unwrap()));
        assert_eq!(
            a.as_slice(),
            [(key("model"), "m1".into()), (key("region"), "eu".into())]
        );
        // Same keys, another value; a prefix; a value that moved to the key.
        for other in [
            &[("model", "m1"), ("region", "us")][..],
            &[("model", "m1")][..],
            &[("model", "m1r"), ("egion", "eu")][..],
        ] {
            let c = Dimensions::shared(other, checked_key).unwrap();
            let text: Vec<(&str, &str)> = c.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            assert_eq!(text, other);
            assert_ne!(c, a);
        }
    }

    #[test]
    fn a_list_is_checked_as_the_apply_checks_dimensions() {
        let pairs = |list: &[(&str, &str)]| -> Vec<(Key, String)> {
            list.iter().map(|&(k, v)| (key(k), v.to_string())).collect()
        };
        let long = "v".repeat(PAIR_VALUE_LEN_MAX + 1);
        let many: Vec<(String, String)> = (0..=PAIRS_MAX)
            .map(|i| (format!("k{i:02}"), "v".to_string()))
            .collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        for list in [
            &[][..],
            &[("model", "m1"), ("region", "eu")][..],
            &[("region", "eu"), ("model", "m1")][..],
            &[("model", "m1"), ("model", "m2")][..],
            &[("model", "tab\there")][..],
            &[("model", long.as_str())][..],
            &many[..PAIRS_MAX],
            &many[..],
        ] {
            let expected =
                check_pairs("dimensions", &pairs(list), PAIRS_MAX, PAIR_VALUE_LEN_MAX).is_ok();
            assert_eq!(Dimensions::new(pairs(list)).checked(), expected, "{list:?}");
            let shared = Dimensions::shared(list, |k| Ok::<_, ()>(key(k))).unwrap();
            assert_eq!(shared.checked(), expected, "{list:?}");
        }
        assert!(!Dimensions::new(pairs(&[("b", "1"), ("a", "2")])).checked());
    }

    #[test]
    fn a_failed_build_is_an_error_and_is_not_remembered() {
        let bad = [("bad/key", "v")];
        assert!(Dimensions::shared(&bad, checked_key).is_err());
        assert!(Dimensions::shared(&bad, checked_key).is_err());
    }

    #[test]
    fn compares_hashes_and_encodes_as_the_pairs() {
        use std::collections::hash_map::DefaultHasher;
        let pairs = vec![
            (key("model"), "m1".to_string()),
            (key("zone"), "b".to_string()),
        ];
        let texts = [("model", "m1"), ("zone", "b")];
        let shared = Dimensions::shared(&texts, checked_key).unwrap();
        let owned = Dimensions::new(pairs.clone());
        assert_eq!(shared, owned);
        let hash = |value: &dyn Fn(&mut DefaultHasher)| {
            let mut h = DefaultHasher::new();
            value(&mut h);
            h.finish()
        };
        assert_eq!(hash(&|h| shared.hash(h)), hash(&|h| pairs.hash(h)));
        assert_eq!(
            bincode::serialize(&shared).unwrap(),
            bincode::serialize(&pairs).unwrap()
        );
        let back: Dimensions = bincode::deserialize(&bincode::serialize(&pairs).unwrap()).unwrap();
        assert_eq!(back, owned);
        assert_eq!(format!("{shared:?}"), format!("{pairs:?}"));
        let empty = Dimensions::default();
        assert!(empty.is_empty());
        assert_eq!(empty, Dimensions::new(Vec::new()));
        assert_eq!(
            bincode::serialize(&empty).unwrap(),
            bincode::serialize(&Vec::<(Key, String)>::new()).unwrap()
        );
    }
}
