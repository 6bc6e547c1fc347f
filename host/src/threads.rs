//! Threads for background work (a round's estimator calls, the training and the
//! augmentation that feeds it): a lower scheduling priority, so that when the cores are
//! busy the live inference worker's threads run first and a round does not slow the
//! stream it learns from.

use std::sync::OnceLock;

/// The nice value background threads take (0 is normal, 19 the lowest).
const NICE: i32 = 10;

/// Makes the thread count candle's CPU matmul asks for on every call a lookup. Unless
/// `RAYON_NUM_THREADS` is set, candle answers by parsing `/proc/cpuinfo` (61 us a read
/// on these machines, more than a small layer's whole product). This sets it to the
/// cores rayon uses anyway.
///
/// # Safety
/// It changes the environment: call it at the start of `main`, before any thread starts.
pub unsafe fn settle_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // SAFETY: the caller runs this before the process has other threads.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", cores.to_string()) };
    }
}

/// Lowers the calling thread's scheduling priority. Best effort: where the system
/// refuses, the thread keeps its priority.
pub fn lower_priority() {
    // SAFETY: setpriority has no memory effects; `who` 0 is the calling thread on Linux
    // (threads have their own nice values) and the process elsewhere.
    #[cfg(unix)]
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, NICE);
    }
}

/// Runs `work` on a background thread of its own named `name`, and waits for it: a
/// round's stages run there, so that the estimator's own work between training steps
/// (its loss, reading and augmenting samples) yields to the inference worker as the
/// training threads do.
pub fn in_background<R: Send>(name: &str, work: impl FnOnce() -> R + Send) -> std::io::Result<R> {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn_scoped(scope, || {
                lower_priority();
                work()
            })?;
        Ok(thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    })
}

/// A pool of `threads` background threads named `name-0`, `name-1`, ...
pub fn pool(name: &'static str, threads: usize) -> Result<rayon::ThreadPool, String> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(move |i| format!("{name}-{i}"))
        .start_handler(|_| lower_priority())
        .build()
        .map_err(|e| format!("cannot start {name} threads: {e}"))
}

/// The process's pool for background data work (one thread a core), made on first use.
pub fn background() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        pool("sedna-background", cores).unwrap_or_else(|_| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .expect("one thread")
        })
    })
}

#[cfg(test)]
mod tests {
    #[cfg(unix)]
    fn nice() -> i32 {
        // SAFETY: getpriority has no memory effects; `who` 0 is the calling thread.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    #[test]
    fn background_work_runs_on_a_named_thread_at_lower_priority_and_returns_its_answer() {
        let caller = std::thread::current().id();
        let (name, id, niceness) = super::in_background("sedna-test-bg", || {
            let thread = std::thread::current();
            #[cfg(unix)]
            let niceness = nice();
            #[cfg(not(unix))]
            let niceness = super::NICE;
            (thread.name().map(str::to_string), thread.id(), niceness)
        })
        .unwrap();
        assert_eq!(name.as_deref(), Some("sedna-test-bg"));
        assert_ne!(id, caller);
        assert!(niceness >= super::NICE, "nice {niceness}");
        #[cfg(unix)]
        assert!(nice() < super::NICE, "the caller keeps its priority");
        // It borrows what the caller holds, and a panic in it reaches the caller.
        let samples = [1, 2, 3];
        assert_eq!(
            super::in_background("sedna-test-bg", || samples.iter().sum::<i32>()).unwrap(),
            6
        );
        let panicked = std::panic::catch_unwind(|| {
            super::in_background("sedna-test-bg", || panic!("in the background"))
        });
        assert!(panicked.is_err());
    }
}
