//! Counters and latency histograms the host keeps as it runs. Each lives with what it
//! counts (the inference worker, the job's rounds, plugin errors); `GET /metrics` shows
//! them in Prometheus text format (`server::metrics`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A count that only goes up.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds, in seconds, of the latency buckets: from a sub-millisecond HEM call to a
/// training of an hour.
pub const BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0, 60.0, 600.0,
];

/// Durations by bucket (Prometheus's cumulative histogram, kept as per-bucket counts so
/// that an observation is one atomic add).
#[derive(Debug, Default)]
pub struct Histogram {
    /// One more than `BUCKETS`: the last counts what is above every bound.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

/// A histogram as Prometheus shows it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HistogramSnapshot {
    /// Observations at or below each of `BUCKETS`, cumulative.
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl HistogramSnapshot {
    /// The upper bound (seconds) of the bucket holding quantile `q`; `None` before any
    /// observation or when it lies above the last bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q * self.count as f64).ceil().max(1.0) as u64;
        let bucket = self.cumulative.iter().position(|seen| *seen >= rank)?;
        BUCKETS.get(bucket).copied()
    }
}

impl Histogram {
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Runs `work` and records how long it took.
    pub fn time<T>(&self, work: impl FnOnce() -> T) -> T {
        let started = std::time::Instant::now();
        let result = work();
        self.observe(started.elapsed());
        result
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let mut cumulative: Vec<u64> = self
            .counts
            .iter()
            .map(|c| {
                running += c.load(Ordering::Relaxed);
                running
            })
            .collect();
        let count = cumulative.pop().unwrap_or(0);
        HistogramSnapshot {
            cumulative,
            count,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_cumulative_buckets() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300)); // <= 0.0005
        h.observe(Duration::from_millis(1)); // <= 0.001, on the bound
        h.observe(Duration::from_secs(3600)); // above every bound
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.cumulative.len(), BUCKETS.len());
        assert_eq!(s.cumulative[1], 0); // 0.00025
        assert_eq!(s.cumulative[2], 1); // 0.0005
        assert_eq!(s.cumulative[3], 2); // 0.001
        assert_eq!(*s.cumulative.last().unwrap(), 2);
        assert!(
            (s.sum_seconds - 3600.0013).abs() < 1e-6,
            "{}",
            s.sum_seconds
        );
    }

    #[test]
    fn quantiles_come_from_the_buckets() {
        let h = Histogram::default();
        assert_eq!(h.snapshot().quantile(0.5), None);
        for ms in [4, 7, 7, 20, 700] {
            h.observe(Duration::from_millis(ms));
        }
        assert_eq!(h.snapshot().quantile(0.5), Some(0.01));
        assert_eq!(h.snapshot().quantile(0.99), Some(1.0));
        h.observe(Duration::from_secs(3600));
        assert_eq!(h.snapshot().quantile(1.0), None);
    }
}
