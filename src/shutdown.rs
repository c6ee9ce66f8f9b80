//! Shutdown signal passed to every long-running task (as in mini-redis): tasks check it between
//! units of work and select on it while sleeping.

use std::time::Duration;

use tokio::sync::watch;

/// Sends the shutdown signal.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// Receives the shutdown signal; cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A connected trigger and receiver.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    /// Signals every receiver.
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }

    /// A receiver for a task started later.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    /// Whether shutdown has been signalled.
    pub fn is_shutdown(&self) -> bool {
        *self.0.borrow()
    }

    /// Completes when shutdown is signalled.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|v| *v).await;
    }

    /// [`Shutdown::wait`] taking ownership, for `take_until`.
    pub async fn wait_owned(mut self) {
        self.wait().await;
    }

    /// Sleeps, waking early on shutdown.
    pub async fn sleep(&self, d: Duration) {
        let mut me = self.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = me.wait() => {}
        }
    }
}
