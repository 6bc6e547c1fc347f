//! Training through the host's engine: the job's training settings, the learning-rate
//! schedule, the seeded shuffle, and the losses the host does not compute, as gradients
//! of the model's outputs (the grid detector's; class probabilities'). The host runs
//! forward and backward over the whole graph and steps the optimizer.

use sedna_plugin_sdk::Params;

use crate::decode::{sigmoid, softmax};

/// Which update rule the host applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Optimizer {
    Sgd,
    AdamW,
}

/// How the learning rate moves over a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    Constant,
    /// From the full rate down to a hundredth of it, along half a cosine.
    Cosine,
}

/// The job's training parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// `all`, `head`, or weight-name prefixes; empty: what the model says (`sedna.trainable`)
    /// or `all`.
    pub trainable: Vec<String>,
    /// Whether the job chose `trainable` (else the model's own choice stands).
    pub trainable_by_job: bool,
    pub freeze: Vec<String>,
    pub optimizer: Optimizer,
    pub learning_rate: f32,
    pub weight_decay: f32,
    pub momentum: f32,
    pub epochs: u32,
    pub batch_size: u32,
    pub warmup_epochs: u32,
    pub schedule: Schedule,
    pub seed: u64,
    /// Threads of the host's training pool (0: half the cores).
    pub threads: u32,
    /// Random changes to each training image, each epoch (none: the images as they are).
    pub augment: Option<Augment>,
    pub batch_norm: BatchNorm,
}

/// What BatchNormalization does with its running statistics while the model trains.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BatchNorm {
    /// They stay as the model has them (the default).
    Frozen,
    /// Batch statistics normalise and the running ones follow them, with this momentum
    /// or each node's own.
    Learn { momentum: Option<f32> },
}

impl BatchNorm {
    fn from_params(params: &Params) -> Result<Self, String> {
        let momentum = match params.get("batch_norm_momentum") {
            Some(_) => Some(params.number("batch_norm_momentum", 0.9, 0.0, 0.9999)? as f32),
            None => None,
        };
        match params.get("batch_norm").unwrap_or("frozen") {
            "frozen" if momentum.is_some() => Err(
                "parameter `batch_norm_momentum` is given but `batch_norm` is `frozen`: set `batch_norm=learn` too, or drop the momentum".to_string(),
            ),
            "frozen" => Ok(BatchNorm::Frozen),
            "learn" => Ok(BatchNorm::Learn { momentum }),
            other => Err(format!(
                "parameter `batch_norm` is {other:?}: expected `frozen` (the running statistics stay) or `learn` (they follow the training batches)"
            )),
        }
    }
}

/// How much each kind of augmentation changes an image (Ultralytics' parameter names).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Augment {
    pub flip: f32,
    pub hue: f32,
    pub saturation: f32,
    pub value: f32,
    pub scale: f32,
    pub translate: f32,
}

impl Augment {
    /// Ultralytics' defaults (`fliplr`, `hsv_h`, `hsv_s`, `hsv_v`, `scale`, `translate`).
    pub const ULTRALYTICS: Augment = Augment {
        flip: 0.5,
        hue: 0.015,
        saturation: 0.7,
        value: 0.4,
        scale: 0.5,
        translate: 0.1,
    };

    fn from_params(params: &Params) -> Result<Option<Self>, String> {
        let base = match params.get("augment").unwrap_or("false") {
            "true" => Augment::ULTRALYTICS,
            "false" => Augment {
                flip: 0.0,
                hue: 0.0,
                saturation: 0.0,
                value: 0.0,
                scale: 0.0,
                translate: 0.0,
            },
            other => {
                return Err(format!(
                    "parameter `augment` is {other:?}: expected `true` or `false`"
                ));
            }
        };
        let a = Augment {
            flip: params.unit("fliplr", base.flip as f64)? as f32,
            hue: params.unit("hsv_h", base.hue as f64)? as f32,
            saturation: params.unit("hsv_s", base.saturation as f64)? as f32,
            value: params.unit("hsv_v", base.value as f64)? as f32,
            scale: params.number("scale", base.scale as f64, 0.0, 0.9)? as f32,
            translate: params.unit("translate", base.translate as f64)? as f32,
        };
        let none = [a.flip, a.hue, a.saturation, a.value, a.scale, a.translate]
            .iter()
            .all(|&v| v == 0.0);
        Ok((!none).then_some(a))
    }
}

/// Boxes moved as an augmented image's pixels moved (`motion`: scale x, scale y, shift x,
/// shift y), clipped to the `width` x `height` image. A box left with under a tenth of
/// its area, or thinner than 2 pixels, is dropped (as Ultralytics drops them).
pub fn moved(
    boxes: &[([f32; 4], u32)],
    [sx, sy, tx, ty]: [f32; 4],
    width: f32,
    height: f32,
) -> Vec<([f32; 4], u32)> {
    boxes
        .iter()
        .filter_map(|&([x1, y1, x2, y2], class)| {
            let (a, b) = (x1 * sx + tx, x2 * sx + tx);
            let (c, d) = (y1 * sy + ty, y2 * sy + ty);
            let (left, right) = (a.min(b), a.max(b));
            let (top, bottom) = (c.min(d), c.max(d));
            let area = (right - left) * (bottom - top);
            let clipped = [
                left.max(0.0),
                top.max(0.0),
                right.min(width),
                bottom.min(height),
            ];
            let (w, h) = (clipped[2] - clipped[0], clipped[3] - clipped[1]);
            (w >= 2.0 && h >= 2.0 && w * h >= 0.1 * area).then_some((clipped, class))
        })
        .collect()
}

fn list(text: &str) -> Vec<String> {
    text.split(',')
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

impl Settings {
    /// Reads the training parameters; `model_trainable` is what the model's metadata
    /// names (`sedna.trainable`).
    pub fn from_params(params: &Params, model_trainable: &[String]) -> Result<Self, String> {
        let by_job = params.get("trainable").filter(|t| !t.is_empty());
        let trainable = match by_job {
            Some(text) => list(text),
            None => model_trainable.to_vec(),
        };
        let optimizer = match params.get("optimizer").unwrap_or("sgd") {
            "sgd" | "SGD" => Optimizer::Sgd,
            "adamw" | "AdamW" => Optimizer::AdamW,
            other => {
                return Err(format!(
                    "parameter `optimizer` is {other:?}: expected `sgd` or `adamw`"
                ));
            }
        };
        let schedule = match params.get("lr_schedule").unwrap_or("constant") {
            "constant" => Schedule::Constant,
            "cosine" => Schedule::Cosine,
            other => {
                return Err(format!(
                    "parameter `lr_schedule` is {other:?}: expected `constant` or `cosine`"
                ));
            }
        };
        Ok(Settings {
            trainable,
            trainable_by_job: by_job.is_some(),
            freeze: params.get("freeze").map(list).unwrap_or_default(),
            optimizer,
            learning_rate: params.number("learning_rate", 0.01, 1e-9, 10.0)? as f32,
            weight_decay: params.number("weight_decay", 0.0, 0.0, 1.0)? as f32,
            momentum: params.unit("momentum", 0.9)? as f32,
            epochs: params.integer("epochs", 10, 1, 10_000)? as u32,
            batch_size: params.integer("batch_size", 16, 1, 65_536)? as u32,
            warmup_epochs: params.integer("warmup_epochs", 0, 0, 1_000)? as u32,
            schedule,
            seed: params.integer("seed", 0, 0, u64::MAX)?,
            threads: params.integer("threads", 0, 0, 1_024)? as u32,
            augment: Augment::from_params(params)?,
            batch_norm: BatchNorm::from_params(params)?,
        })
    }

    /// The learning rate of optimizer step `step` (from 0) of `total`, `per_epoch` a
    /// epoch: a linear warm-up from a tenth, then the schedule.
    pub fn learning_rate_at(&self, step: u64, per_epoch: u64, total: u64) -> f32 {
        let warmup = self.warmup_epochs as u64 * per_epoch;
        let lr = self.learning_rate;
        if step < warmup {
            return lr * (0.1 + 0.9 * step as f32 / warmup as f32);
        }
        match self.schedule {
            Schedule::Constant => lr,
            Schedule::Cosine => {
                let span = total.saturating_sub(warmup).max(1) as f32;
                let t = (step - warmup) as f32 / span;
                let floor = lr * 0.01;
                floor + (lr - floor) * 0.5 * (1.0 + (std::f32::consts::PI * t).cos())
            }
        }
    }
}

/// A seeded Fisher-Yates shuffle of `order` (the same seed, the same order).
pub fn shuffle(order: &mut [u32], random: &mut u64) {
    for i in (1..order.len()).rev() {
        let j = (splitmix(random) % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A loss over a batch and its gradient with respect to the output, element by element.
pub type LossAndGradient = (f64, Vec<f32>);

/// Cross-entropy on class probabilities (a model whose output follows its Softmax):
/// `-ln p[class]`, the mean over the batch. Its gradient through the softmax is the
/// familiar `p - onehot` on the logits.
pub fn probabilities(
    output: &[f32],
    classes: usize,
    targets: &[usize],
) -> Result<LossAndGradient, String> {
    if output.len() != classes * targets.len() {
        return Err(format!(
            "the output holds {} values for {} samples of {classes} classes",
            output.len(),
            targets.len()
        ));
    }
    let n = targets.len() as f32;
    let mut gradient = vec![0.0; output.len()];
    let mut loss = 0.0;
    for (i, &class) in targets.iter().enumerate() {
        let p = output[i * classes + class].max(1e-12);
        loss -= (p as f64).ln();
        gradient[i * classes + class] = -1.0 / (p * n);
    }
    Ok((loss / targets.len() as f64, gradient))
}

/// The grid head's targets for one cell that holds a box centre.
struct CellTarget {
    x: f32,
    y: f32,
    w: f32,
    h: f32,
    class: usize,
}

/// The grid head (see `decode::grid`) on a batch of outputs `[N, 5 + C, rows, cols]`,
/// `boxes` per sample in model-input pixels: objectness by binary cross-entropy on every
/// cell, the cells holding a box centre and the others weighted as two equal halves (a
/// frame has a handful of objects among hundreds of cells: unweighted, "nothing
/// anywhere" wins); centre, size (binary cross-entropy on their sigmoids) and class
/// (cross-entropy) on the cells holding a box centre (averaged over boxes). Where two
/// centres fall in one cell, the later box is the target. The mean over the batch.
pub fn grid(
    output: &[f32],
    dims: &[u32],
    classes: usize,
    input: (u32, u32),
    boxes: &[Vec<([f32; 4], u32)>],
) -> Result<LossAndGradient, String> {
    let &[n, channels, rows, cols] = dims else {
        return Err(format!("the grid output is {dims:?}, not [N, 5 + C, H, W]"));
    };
    let (n, channels, rows, cols) = (n as usize, channels as usize, rows as usize, cols as usize);
    if channels != 5 + classes || n != boxes.len() || output.len() != n * channels * rows * cols {
        return Err(format!(
            "the grid output is {dims:?}: {} samples of 5 + {classes} channels were expected",
            boxes.len()
        ));
    }
    let plane = rows * cols;
    let (stride_x, stride_y) = (input.0 as f32 / cols as f32, input.1 as f32 / rows as f32);
    let bce = |p: f32, t: f32| -> f64 {
        let p = p.clamp(1e-7, 1.0 - 1e-7) as f64;
        -(t as f64 * p.ln() + (1.0 - t as f64) * (1.0 - p).ln())
    };
    let mut gradient = vec![0.0; output.len()];
    let mut loss = 0.0;
    let mut logits = vec![0.0; classes];
    let mut probabilities = vec![0.0; classes];
    for (s, sample) in boxes.iter().enumerate() {
        let mut cells: Vec<Option<CellTarget>> = (0..plane).map(|_| None).collect();
        for &(b, class) in sample {
            if class as usize >= classes {
                return Err(format!("class {class} is beyond the {classes} classes"));
            }
            let (cx, cy) = (
                (b[0] + b[2]) / 2.0 / stride_x,
                (b[1] + b[3]) / 2.0 / stride_y,
            );
            let (col, row) = (cx.floor(), cy.floor());
            if col < 0.0 || row < 0.0 || col >= cols as f32 || row >= rows as f32 {
                continue;
            }
            cells[row as usize * cols + col as usize] = Some(CellTarget {
                x: cx - col,
                y: cy - row,
                w: ((b[2] - b[0]) / input.0 as f32).clamp(0.0, 1.0),
                h: ((b[3] - b[1]) / input.1 as f32).clamp(0.0, 1.0),
                class: class as usize,
            });
        }
        let positives = cells.iter().filter(|c| c.is_some()).count().max(1) as f32;
        let base = s * channels * plane;
        let at = |channel: usize, cell: usize| base + channel * plane + cell;
        for (cell, target) in cells.iter().enumerate() {
            let objectness = sigmoid(output[at(0, cell)]);
            let (wanted, weight) = match target {
                Some(_) => (1.0, 1.0 / positives),
                None => (0.0, 1.0 / (plane as f32 - positives).max(1.0)),
            };
            loss += bce(objectness, wanted) * weight as f64;
            gradient[at(0, cell)] = (objectness - wanted) * weight;
            let Some(t) = target else { continue };
            for (k, want) in [(1, t.x), (2, t.y), (3, t.w), (4, t.h)] {
                let p = sigmoid(output[at(k, cell)]);
                loss += bce(p, want) / positives as f64;
                gradient[at(k, cell)] = (p - want) / positives;
            }
            for (c, l) in logits.iter_mut().enumerate() {
                *l = output[at(5 + c, cell)];
            }
            softmax(&logits, &mut probabilities);
            loss -= (probabilities[t.class].max(1e-12) as f64).ln() / positives as f64;
            for (c, p) in probabilities.iter().enumerate() {
                let onehot = if c == t.class { 1.0 } else { 0.0 };
                gradient[at(5 + c, cell)] = (p - onehot) / positives;
            }
        }
    }
    let scale = 1.0 / n as f32;
    gradient.iter_mut().for_each(|g| *g *= scale);
    Ok((loss / n as f64, gradient))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Central differences of `loss` at `output`, element by element, against `gradient`.
    fn check(output: &[f32], loss: impl Fn(&[f32]) -> f64, gradient: &[f32]) {
        for i in 0..output.len() {
            let mut plus = output.to_vec();
            plus[i] += 1e-3;
            let mut minus = output.to_vec();
            minus[i] -= 1e-3;
            let numeric = (loss(&plus) - loss(&minus)) / 2e-3;
            let error = (numeric - gradient[i] as f64).abs();
            assert!(
                error < 1e-3 * numeric.abs().max(1.0),
                "element {i}: gradient {} vs central difference {numeric}",
                gradient[i]
            );
        }
    }

    fn output(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..len)
            .map(|_| (splitmix(&mut state) % 2000) as f32 / 1000.0 - 1.0)
            .collect()
    }

    #[test]
    fn the_grid_gradient_is_the_gradient_of_the_grid_loss() {
        let boxes = vec![
            vec![([2.0, 2.0, 8.0, 9.0], 0), ([11.0, 12.0, 19.0, 18.0], 1)],
            vec![([1.0, 11.0, 7.0, 19.0], 1)],
        ];
        let dims = [2, 7, 2, 2];
        let values = output(2 * 7 * 4, 1);
        let (_, gradient) = grid(&values, &dims, 2, (20, 20), &boxes).unwrap();
        check(
            &values,
            |o| grid(o, &dims, 2, (20, 20), &boxes).unwrap().0,
            &gradient,
        );
    }

    #[test]
    fn the_probabilities_gradient_is_the_gradient_of_its_loss() {
        let mut values = output(6, 2);
        for row in values.chunks_mut(3) {
            let logits = row.to_vec();
            softmax(&logits, row);
        }
        let (_, gradient) = probabilities(&values, 3, &[2, 0]).unwrap();
        check(
            &values,
            |o| probabilities(o, 3, &[2, 0]).unwrap().0,
            &gradient,
        );
    }

    #[test]
    fn bad_outputs_are_refused_with_their_shape() {
        let err = grid(&[0.0; 8], &[1, 8], 2, (20, 20), &[vec![]]).unwrap_err();
        assert!(err.contains("not [N, 5 + C, H, W]"), "{err}");
        let err = grid(&[0.0; 24], &[1, 6, 2, 2], 2, (20, 20), &[vec![]]).unwrap_err();
        assert!(err.contains("5 + 2 channels"), "{err}");
        let err = probabilities(&[0.5; 5], 3, &[0, 1]).unwrap_err();
        assert!(err.contains("5 values for 2 samples"), "{err}");
    }

    #[test]
    fn warm_up_then_cosine_ends_at_a_hundredth() {
        let params = [
            sedna_plugin_sdk::hem::Param {
                key: "learning_rate".into(),
                value: "0.1".into(),
            },
            sedna_plugin_sdk::hem::Param {
                key: "warmup_epochs".into(),
                value: "1".into(),
            },
            sedna_plugin_sdk::hem::Param {
                key: "lr_schedule".into(),
                value: "cosine".into(),
            },
        ];
        let s = Settings::from_params(&Params::new(&params), &[]).unwrap();
        assert!((s.learning_rate_at(0, 10, 100) - 0.01).abs() < 1e-6);
        assert!((s.learning_rate_at(10, 10, 100) - 0.1).abs() < 1e-6);
        assert!((s.learning_rate_at(100, 10, 100) - 0.001).abs() < 1e-6);
        let bad = [sedna_plugin_sdk::hem::Param {
            key: "optimizer".into(),
            value: "adam".into(),
        }];
        let err = Settings::from_params(&Params::new(&bad), &[]).unwrap_err();
        assert!(err.contains("`sgd` or `adamw`"), "{err}");
    }

    #[test]
    fn augmented_boxes_follow_the_motion_and_lost_ones_drop() {
        let boxes = [([10.0, 10.0, 20.0, 30.0], 1), ([0.0, 0.0, 4.0, 4.0], 0)];
        // A flip of a 100-wide image: x -> 100 - x.
        let flipped = moved(&boxes, [-1.0, 1.0, 100.0, 0.0], 100.0, 50.0);
        assert_eq!(
            flipped,
            [([80.0, 10.0, 90.0, 30.0], 1), ([96.0, 0.0, 100.0, 4.0], 0)]
        );
        // Shifted 97 right: the first leaves the image, the second is cut to 3 px.
        let shifted = moved(&boxes, [1.0, 1.0, 97.0, 0.0], 100.0, 50.0);
        assert_eq!(shifted, [([97.0, 0.0, 100.0, 4.0], 0)]);
        let params = [sedna_plugin_sdk::hem::Param {
            key: "augment".into(),
            value: "true".into(),
        }];
        let s = Settings::from_params(&Params::new(&params), &[]).unwrap();
        assert_eq!(s.augment, Some(Augment::ULTRALYTICS));
        assert_eq!(
            Settings::from_params(&Params::new(&[]), &[])
                .unwrap()
                .augment,
            None
        );
    }

    #[test]
    fn batch_norm_statistics_are_frozen_unless_asked() {
        let settings = |pairs: &[(&str, &str)]| {
            let params: Vec<sedna_plugin_sdk::hem::Param> = pairs
                .iter()
                .map(|(k, v)| sedna_plugin_sdk::hem::Param {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect();
            Settings::from_params(&Params::new(&params), &[]).map(|s| s.batch_norm)
        };
        assert_eq!(settings(&[]), Ok(BatchNorm::Frozen));
        assert_eq!(
            settings(&[("batch_norm", "learn")]),
            Ok(BatchNorm::Learn { momentum: None })
        );
        assert_eq!(
            settings(&[("batch_norm", "learn"), ("batch_norm_momentum", "0.97")]),
            Ok(BatchNorm::Learn {
                momentum: Some(0.97)
            })
        );
        let err = settings(&[("batch_norm_momentum", "0.97")]).unwrap_err();
        assert!(err.contains("set `batch_norm=learn`"), "{err}");
        let err = settings(&[("batch_norm", "train")]).unwrap_err();
        assert!(err.contains("`frozen`") && err.contains("`learn`"), "{err}");
        let err = settings(&[("batch_norm", "learn"), ("batch_norm_momentum", "1")]).unwrap_err();
        assert!(err.contains("batch_norm_momentum"), "{err}");
    }

    #[test]
    fn the_same_seed_shuffles_alike() {
        let order = |seed| {
            let mut o: Vec<u32> = (0..20).collect();
            let mut r = seed;
            shuffle(&mut o, &mut r);
            o
        };
        assert_eq!(order(5), order(5));
        assert_ne!(order(5), order(6));
    }
}
