//! Turning SIGTERM and Ctrl-C into one shutdown signal that every task can watch.

use tokio::sync::watch;

/// The exit status of a node stopped at once by a second SIGTERM or SIGINT.
pub const EXIT_SECOND_SIGNAL: i32 = 130;

/// A signal this soon after the first is the same stop delivered twice, not a second one.
const SECOND_SIGNAL_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// A shutdown signal: `trigger` once, and every `watch` receiver sees `true`.
#[derive(Clone)]
pub struct Shutdown {
    sender: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        let (sender, _) = watch::channel(false);
        Shutdown { sender }
    }

    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.sender.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.sender.subscribe()
    }

    /// Resolves once the signal is triggered.
    pub async fn wait(&self) {
        let mut receiver = self.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = receiver.wait_for(|stop| *stop).await;
    }

    /// Triggers this signal on the first SIGTERM or SIGINT (Ctrl-C) the process receives; a
    /// second one, a second or more later, ends the process at once with
    /// [`EXIT_SECOND_SIGNAL`].
    pub fn trigger_on_signals(&self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let this = self.clone();
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = terminate.recv() => "SIGTERM",
                _ = interrupt.recv() => "SIGINT",
            };
            tracing::info!(
                signal = name,
                "shutting down: no new requests, finishing those in flight (a second signal stops at once)"
            );
            this.trigger();
            // A second signal: the operator will not wait. Stopping at once is as safe as a
            // kill -9: every write acknowledged was fsynced before it was acknowledged. One
            // within a second of the first is the same stop delivered twice (Ctrl-C reaches
            // the terminal's whole process group, and `make run`'s script sends SIGTERM too).
            let first = std::time::Instant::now();
            let name = loop {
                let name = tokio::select! {
                    _ = terminate.recv() => "SIGTERM",
                    _ = interrupt.recv() => "SIGINT",
                };
                if first.elapsed() >= SECOND_SIGNAL_AFTER {
                    break name;
                }
            };
            tracing::warn!(
                signal = name,
                "second signal: stopping at once (every acknowledged write is on disk already)"
            );
            std::process::exit(EXIT_SECOND_SIGNAL);
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_subscriber_sees_the_trigger() {
        let shutdown = Shutdown::new();
        let mut early = shutdown.subscribe();
        let waiter = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { shutdown.wait().await }
        });
        assert!(!shutdown.is_triggered());
        shutdown.trigger();
        waiter.await.unwrap();
        early.wait_for(|stop| *stop).await.unwrap();
        assert!(*shutdown.subscribe().borrow());
    }
}
