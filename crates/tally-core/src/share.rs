//! Sharing of small immutable values that many accounts hold alike: a grant id such as
//! `allowance` on every account, the same list price on every account of a plan. A value built
//! right after an identical one (same bytes, not merely equal) reuses its allocation: at a
//! million accounts, two grant ids and one set of credit terms per account are 128 bytes less
//! per account.
//!
//! Best effort and invisible: each thread remembers its last few values in a small
//! direct-mapped table (no locks, bounded, nothing to clean up); a miss simply allocates.
//! Only identical values are shared, so no encoding, hash or result depends on whether a value
//! was shared, and replicas stay identical whatever their threads remembered.

use std::cell::RefCell;
use std::sync::Arc;
use std::thread::LocalKey;

/// Slots per table (a value's slot is its hash modulo this).
const SLOTS: usize = 64;

/// One thread's recently built values of one kind.
pub(crate) struct Recent<T: ?Sized>(RefCell<[Option<Arc<T>>; SLOTS]>);

impl<T: ?Sized> Recent<T> {
    pub(crate) fn new() -> Self {
        Recent(RefCell::new(std::array::from_fn(|_| None)))
    }
}

/// The remembered value identical to the one being built (`same` says so), or the value
/// `make` builds, then remembered in its slot.
pub(crate) fn shared<T: ?Sized + 'static>(
    table: &'static LocalKey<Recent<T>>,
    hash: u64,
    same: impl Fn(&T) -> bool,
    make: impl FnOnce() -> Arc<T>,
) -> Arc<T> {
    shared_or_err(table, hash, same, || {
        Ok::<_, std::convert::Infallible>(make())
    })
    .unwrap_or_else(|never| match never {})
}

/// [`shared`] for a value whose making can fail: a failure is returned and nothing is
/// remembered.
pub(crate) fn shared_or_err<T: ?Sized + 'static, E>(
    table: &'static LocalKey<Recent<T>>,
    hash: u64,
    same: impl Fn(&T) -> bool,
    make: impl FnOnce() -> Result<Arc<T>, E>,
) -> Result<Arc<T>, E> {
    table.with(|recent| {
        let mut slots = recent.0.borrow_mut();
        let slot = &mut slots[(hash % SLOTS as u64) as usize];
        if let Some(held) = slot.as_ref().filter(|held| same(held)) {
            return Ok(Arc::clone(held));
        }
        let made = make()?;
        *slot = Some(Arc::clone(&made));
        Ok(made)
    })
}

thread_local! {
    static TEXTS: Recent<str> = Recent::new();
}

/// `text` as an `Arc<str>`, shared with the last identical text built on this thread.
pub(crate) fn text(text: &str) -> Arc<str> {
    let mut hasher = crate::table::FoldHasher::new(0);
    hasher.bytes(text.as_bytes());
    shared(
        &TEXTS,
        hasher.finish(),
        |held| held == text,
        || Arc::from(text),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_texts_share_one_allocation() {
        let a = text("allowance");
        let b = text("allowance");
        assert!(Arc::ptr_eq(&a, &b));
        let c = text("purchased");
        assert_eq!(&*c, "purchased");
        assert!(!Arc::ptr_eq(&a, &c));
    }

    #[test]
    fn a_slot_taken_by_another_value_still_gives_the_right_one() {
        // More distinct texts than slots: every answer is still the text asked for.
        let texts: Vec<String> = (0..SLOTS * 4).map(|i| format!("grant-{i}")).collect();
        for round in 0..2 {
            for t in &texts {
                assert_eq!(&*text(t), t.as_str(), "round {round}");
            }
        }
    }
}
