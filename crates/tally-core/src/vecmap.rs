//! A small sorted map on a `Vec`: for the per-account maps (months, meters) that hold a
//! handful of entries, where a `BTreeMap`'s 11-slot nodes would waste most of their memory.
//! Iteration is in key order, so encodings stay canonical.

use serde::{Deserialize, Serialize};
use std::borrow::Borrow;

/// Inserts `value` at `index` in a boxed slice that grows by exactly one slot: for the small
/// per-account lists (grants, months, meters), where spare capacity would be paid per account.
pub(crate) fn insert_one<T>(slice: &mut Box<[T]>, index: usize, value: T) {
    let mut items = std::mem::take(slice).into_vec();
    items.reserve_exact(1);
    items.insert(index, value);
    *slice = items.into_boxed_slice();
}

/// The entries are a boxed slice rather than a `Vec`: 16 bytes in every account instead of
/// 24, and the map grows one entry at a time anyway ([`insert_one`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VecMap<K, V>(Box<[(K, V)]>);

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap(Box::default())
    }
}

impl<K: Ord + Clone, V> VecMap<K, V> {
    fn position<Q: Ord + ?Sized>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
    {
        self.0.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.position(key).ok().map(|i| &self.0[i].1)
    }

    /// The value at `key`, inserted with `make` first if absent (the key is cloned only then).
    pub fn get_or_insert_with(&mut self, key: &K, make: impl FnOnce() -> V) -> &mut V {
        let index = match self.position(key) {
            Ok(i) => i,
            Err(i) => {
                insert_one(&mut self.0, i, (key.clone(), make()));
                i
            }
        };
        &mut self.0[index].1
    }

    /// The value of the greatest key.
    pub fn last_value(&self) -> Option<&V> {
        self.0.last().map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
}
