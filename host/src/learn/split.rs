//! Splitting new samples into training and evaluation, as Sedna's `trainProb` does, but
//! after a seeded shuffle (Sedna takes the first lines for training, so the evaluation
//! set is always the newest lines), and keeping evaluation sets per round, bounded and
//! without duplicates.

use std::collections::{HashSet, VecDeque};

use crate::media::Sample;

/// Evaluation sets kept, newest first dropped last (Sedna keeps 5).
pub const EVAL_SETS_KEPT: usize = 5;

/// Shuffles `samples` with `seed`, then gives `round(train_prob * n)` to training and the
/// rest to evaluation. The same samples and seed always split the same way.
pub fn split(mut samples: Vec<Sample>, train_prob: f64, seed: u64) -> (Vec<Sample>, Vec<Sample>) {
    shuffle(&mut samples, seed);
    let train = ((samples.len() as f64) * train_prob.clamp(0.0, 1.0)).round() as usize;
    let eval = samples.split_off(train);
    (samples, eval)
}

/// Earlier rounds' training samples to train on again beside a round's new ones, so that
/// a round that sees only new data does not forget what the model knew: `count` of them,
/// chosen by a shuffle seeded with `seed` (the round: a resumed round replays the same).
pub fn replay(mut earlier: Vec<Sample>, count: usize, seed: u64) -> Vec<Sample> {
    shuffle(&mut earlier, seed ^ 0x4E91_A7C3);
    earlier.truncate(count);
    earlier
}

/// Fisher-Yates with SplitMix64.
fn shuffle(samples: &mut [Sample], seed: u64) {
    let mut state = seed;
    for i in (1..samples.len()).rev() {
        let j = (next(&mut state) % (i as u64 + 1)) as usize;
        samples.swap(i, j);
    }
}

fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The evaluation sets of the last rounds. A sample (image and label) is in at most one
/// of them: evaluating on a duplicate counts it twice.
#[derive(Default)]
pub struct EvalSets {
    rounds: VecDeque<(u64, Vec<Sample>)>,
}

impl EvalSets {
    /// Adds round `round`'s evaluation samples, dropping those already held, and forgets
    /// the oldest round past [`EVAL_SETS_KEPT`]. Returns how many were duplicates.
    pub fn add(&mut self, round: u64, samples: Vec<Sample>) -> usize {
        let held: HashSet<String> = self.samples().map(key).collect();
        let total = samples.len();
        let mut seen = HashSet::new();
        let fresh: Vec<Sample> = samples
            .into_iter()
            .filter(|s| {
                let k = key(s);
                !held.contains(&k) && seen.insert(k)
            })
            .collect();
        let duplicates = total - fresh.len();
        self.rounds.push_back((round, fresh));
        while self.rounds.len() > EVAL_SETS_KEPT {
            self.rounds.pop_front();
        }
        duplicates
    }

    /// Every held sample, oldest round first.
    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.rounds.iter().flat_map(|(_, samples)| samples)
    }

    /// The rounds held, oldest first.
    pub fn rounds(&self) -> impl Iterator<Item = u64> + '_ {
        self.rounds.iter().map(|(round, _)| *round)
    }
}

/// What makes two samples the same: the image and its label.
fn key(sample: &Sample) -> String {
    format!("{}\u{0}{:?}", sample.image.display(), sample.label)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::media::Label;

    fn samples(range: std::ops::Range<u64>) -> Vec<Sample> {
        range
            .map(|i| Sample {
                line: i + 1,
                image: PathBuf::from(format!("images/{i}.jpg")),
                label: Label::Class((i % 3).to_string()),
            })
            .collect()
    }

    #[test]
    fn splits_by_train_prob_after_a_seeded_shuffle() {
        let (train, eval) = split(samples(0..100), 0.8, 7);
        assert_eq!((train.len(), eval.len()), (80, 20));
        // Not Sedna's "first 80 lines": the evaluation set is drawn from all of them.
        assert!(eval.iter().any(|s| s.line <= 80), "{eval:?}");
        // Reproducible, and every sample lands exactly once.
        let (again, _) = split(samples(0..100), 0.8, 7);
        assert_eq!(train, again);
        let mut lines: Vec<u64> = train.iter().chain(&eval).map(|s| s.line).collect();
        lines.sort();
        assert_eq!(lines, (1..=100).collect::<Vec<_>>());
        assert_ne!(
            split(samples(0..100), 0.8, 8).0,
            train,
            "another seed, another split"
        );
        assert_eq!(split(samples(0..3), 1.0, 1).1.len(), 0);
        assert_eq!(split(Vec::new(), 0.8, 1), (Vec::new(), Vec::new()));
    }

    #[test]
    fn replay_takes_a_bounded_seeded_choice_of_earlier_samples() {
        let picked = replay(samples(0..50), 10, 2);
        assert_eq!(picked.len(), 10);
        assert_eq!(
            picked,
            replay(samples(0..50), 10, 2),
            "a resumed round replays the same"
        );
        assert_ne!(picked, replay(samples(0..50), 10, 3));
        assert_ne!(picked, samples(0..10), "not just the oldest");
        assert_eq!(
            replay(samples(0..4), 10, 2).len(),
            4,
            "at most what there is"
        );
    }

    #[test]
    fn eval_sets_are_bounded_and_hold_no_duplicates() {
        let mut sets = EvalSets::default();
        assert_eq!(sets.add(1, samples(0..10)), 0);
        // Half of round 2's samples were already held; one is repeated within the round.
        let mut second = samples(5..15);
        second.push(samples(14..15).remove(0));
        assert_eq!(sets.add(2, second), 6);
        assert_eq!(sets.samples().count(), 15);
        for round in 3..=8 {
            sets.add(round, samples(round * 100..round * 100 + 2));
        }
        assert_eq!(sets.rounds().collect::<Vec<_>>(), [4, 5, 6, 7, 8]);
        assert_eq!(sets.samples().count(), 10);
    }
}
