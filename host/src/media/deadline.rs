//! Stopping a model run at a deadline. A plugin's call has a deadline, and the engine
//! interrupts its WebAssembly there; but a host call it makes (a model run) is native
//! code that no epoch reaches, and one run on a large input can take seconds. ONNX
//! Runtime stops a run whose `RunOptions` are terminated from another thread: one
//! watchdog thread for the process terminates each run whose deadline passes. (tract,
//! through ort-tract, ignores the flag: its runs end when they end.)

use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Instant;

use ort::session::RunOptions;

/// Runs being watched, and the thread that watches them.
struct Watchdog {
    runs: Mutex<Vec<Watched>>,
    changed: Condvar,
}

struct Watched {
    id: u64,
    deadline: Instant,
    options: Arc<RunOptions>,
}

/// A run under watch; dropping it ends the watch.
pub(crate) struct Watch {
    id: u64,
}

/// Watches `options` until the returned guard drops: at `deadline` the run is terminated.
pub(crate) fn watch(deadline: Instant, options: Arc<RunOptions>) -> Watch {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dog = watchdog();
    let mut runs = dog.runs.lock().unwrap();
    // The watchdog sleeps until the earliest deadline: wake it only for an earlier one
    // (not once a run, on the worker's hot path).
    let earliest = runs.iter().all(|run| run.deadline > deadline);
    runs.push(Watched {
        id,
        deadline,
        options,
    });
    if earliest {
        dog.changed.notify_one();
    }
    Watch { id }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut runs = watchdog().runs.lock().unwrap();
        runs.retain(|run| run.id != self.id);
    }
}

fn watchdog() -> &'static Watchdog {
    static DOG: OnceLock<&'static Watchdog> = OnceLock::new();
    DOG.get_or_init(|| {
        let dog: &'static Watchdog = Box::leak(Box::new(Watchdog {
            runs: Mutex::default(),
            changed: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("sedna-deadlines".into())
            .spawn(move || dog.run())
            .expect("cannot start the deadline thread");
        dog
    })
}

impl Watchdog {
    fn run(&self) {
        let mut runs = self.runs.lock().unwrap();
        loop {
            let now = Instant::now();
            runs.retain(|run| {
                if run.deadline > now {
                    return true;
                }
                if let Err(e) = run.options.terminate() {
                    tracing::warn!("cannot stop a model run past its deadline: {e}");
                }
                false
            });
            runs = match runs.iter().map(|run| run.deadline).min() {
                Some(next) => {
                    let wait = next.saturating_duration_since(Instant::now());
                    self.changed.wait_timeout(runs, wait).unwrap().0
                }
                None => self.changed.wait(runs).unwrap(),
            };
        }
    }
}
