//! The `hard_examples` metric: the worker's last decisions, oldest first.

use std::collections::VecDeque;

/// Decisions remembered for the `hard_examples` metric: the largest window the built-in
/// `HardExampleRatio` condition accepts.
pub const RECENT_DECISIONS: usize = 100_000;

/// The last [`RECENT_DECISIONS`] decisions (hard or not), oldest first. One home for the
/// window, whether the worker runs in this process or its results log is followed.
#[derive(Debug, Default)]
pub struct RecentDecisions(VecDeque<bool>);

impl RecentDecisions {
    /// Remembers one decision, forgetting the oldest past the window.
    pub fn push(&mut self, hard: bool) {
        if self.0.len() == RECENT_DECISIONS {
            self.0.pop_front();
        }
        self.0.push_back(hard);
    }

    /// The decisions, oldest first, as 1 (hard) and 0: what trigger conditions read.
    pub fn values(&self) -> Vec<f64> {
        self.0
            .iter()
            .map(|&hard| f64::from(u8::from(hard)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_keeps_the_newest_decisions() {
        let mut recent = RecentDecisions::default();
        for i in 0..RECENT_DECISIONS + 2 {
            recent.push(i < 2);
        }
        let values = recent.values();
        assert_eq!(values.len(), RECENT_DECISIONS);
        assert!(
            values.iter().all(|&v| v == 0.0),
            "the two hard ones were the oldest"
        );
    }
}
