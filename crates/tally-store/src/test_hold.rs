//! A gate that tests close to stop a background thread at one point (a log sync, a snapshot
//! assembly) and open to let it go on. Open unless a test closed it.

use std::sync::{Condvar, Mutex};

pub(crate) struct TestHold {
    held: Mutex<bool>,
    released: Condvar,
}

impl TestHold {
    pub(crate) const fn new() -> Self {
        TestHold {
            held: Mutex::new(false),
            released: Condvar::new(),
        }
    }

    /// Closes (`true`) or opens (`false`) the gate.
    pub(crate) fn set(&self, held: bool) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = held;
        self.released.notify_all();
    }

    /// Returns once the gate is open.
    pub(crate) fn pass(&self) {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        drop(
            self.released
                .wait_while(held, |held| *held)
                .unwrap_or_else(|p| p.into_inner()),
        );
    }
}
