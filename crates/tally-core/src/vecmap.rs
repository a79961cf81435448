//! A small sorted map on a `Vec`: for the per-account maps (months, meters) that hold a
//! handful of entries, where a `BTreeMap`'s 11-slot nodes would waste most of their memory.
//! Iteration is in key order, so encodings stay canonical.

use serde::{Deserialize, Serialize};
use std::borrow::Borrow;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VecMap<K, V>(Vec<(K, V)>);

impl<K, V> Default for VecMap<K, V> {
    fn default() -> Self {
        VecMap(Vec::new())
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
                // Grow one slot at a time: these maps stay small and live in every account.
                self.0.reserve_exact(1);
                self.0.insert(i, (key.clone(), make()));
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
