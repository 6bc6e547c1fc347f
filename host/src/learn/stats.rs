//! Rounds and the time their stages take, for `/metrics`.

use crate::metrics::{Counter, Histogram};
use crate::spec::Stage;

#[derive(Debug, Default)]
pub struct RoundStats {
    pub completed: Counter,
    pub failed: Counter,
    pub deploys: Counter,
    pub train: Histogram,
    pub eval: Histogram,
    pub deploy: Histogram,
}

impl RoundStats {
    /// Each stage with its histogram (its name in `/metrics` is the stage's, lower case).
    pub fn stages(&self) -> [(Stage, &Histogram); 3] {
        [
            (Stage::Train, &self.train),
            (Stage::Eval, &self.eval),
            (Stage::Deploy, &self.deploy),
        ]
    }

    pub fn of(&self, stage: Stage) -> &Histogram {
        match stage {
            Stage::Train => &self.train,
            Stage::Eval => &self.eval,
            Stage::Deploy => &self.deploy,
        }
    }
}
