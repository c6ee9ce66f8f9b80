//! A process whose async runtime stops running its tasks leaves, so that a new one takes over.
//!
//! Everything a qyzmet process does runs on its tokio runtime. A runtime thread that blocks
//! forever — a deadlock inside a library — can leave the process alive, holding its deliveries
//! and doing nothing: the broker gives them to no other consumer while the connection stays
//! open, and a supervisor without a liveness probe sees a running process. So a task ticks once
//! a second, a plain thread checks the tick, and when it is older than the allowed stall the
//! process exits with [`EXIT_STALLED`]: its supervisor (systemd `Restart=`, Kubernetes) starts
//! a new one, and the broker returns the deliveries to their queues when the connection drops.
//!
//! Why it exists: in a 1,000,000-request drain (issue 9), during a broker restart, lapin 4.12.3
//! deadlocked a runtime thread against its own I/O thread — one held a channel's status lock
//! for writing while finishing a recovery and then waited to read it while dropping the replies
//! it cancelled; the other waited to write it. The intake process kept 128 deliveries and its
//! HTTP endpoints stopped answering. Nothing inside the process can free a deadlocked thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The exit code of a process that left because its runtime stalled (`EX_SOFTWARE`).
pub const EXIT_STALLED: i32 = 70;

/// How often the runtime ticks.
const TICK: Duration = Duration::from_secs(1);

/// Starts the tick on the current runtime and the thread that watches it; `on_stall` runs, on
/// that thread, once the tick is older than `stall`. Processes pass [`leave`].
pub fn start(stall: Duration, on_stall: impl FnOnce(Duration) + Send + 'static) -> Result<(), String> {
    let started = Instant::now();
    // Milliseconds since `started` at the last tick: one atomic, no lock a stalled runtime
    // could hold.
    let last = Arc::new(AtomicU64::new(0));
    let beat = last.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        loop {
            tick.tick().await;
            beat.store(millis(started.elapsed()), Ordering::Relaxed);
        }
    });
    std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            loop {
                std::thread::sleep(TICK.min(stall / 4).max(Duration::from_millis(10)));
                let silent = started.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                if silent > stall {
                    on_stall(silent);
                    return;
                }
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start the watchdog thread: {e}"))
}

/// Leaves the process with [`EXIT_STALLED`], saying why on stderr (the logging pipeline runs on
/// the stalled runtime's threads too, so it is not relied on).
pub fn leave(silent: Duration) {
    eprintln!(
        "qyzmet: the async runtime ran no task for {silent:?}; exiting with code {EXIT_STALLED} so that a new \
         process takes over (its unacknowledged deliveries return to their queues)"
    );
    std::process::exit(EXIT_STALLED);
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runtime_that_runs_no_task_is_reported_after_the_allowed_stall() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let (told, reported) = std::sync::mpsc::channel();
        let stall = Duration::from_millis(300);
        runtime.block_on(async {
            start(stall, move |silent| {
                let _ = told.send(silent);
            })
            .expect("watchdog");
            // Let the tick run once, then block the runtime's only thread, as a deadlock would.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let blocked = Instant::now();
            let silent = reported.recv_timeout(Duration::from_secs(10)).expect("the stall is reported");
            assert!(silent > stall, "reported after {silent:?}, allowed {stall:?}");
            assert!(blocked.elapsed() >= stall - Duration::from_millis(60), "not before the allowed stall");
        });
    }
}
