//! Fine-tuning the layer that produces a model's output (a Gemm or a 1x1 Conv) on
//! features the host computes once per sample: mini-batch SGD with momentum, seeded
//! shuffling, and a stop with an error when the loss is no longer finite.

use crate::decode::{sigmoid, softmax};

/// A linear head: `outputs = weight · features + bias`, weight row-major `[outputs, features]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Head {
    pub outputs: usize,
    pub features: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Head {
    pub fn zeros(outputs: usize, features: usize) -> Self {
        Head {
            outputs,
            features,
            weight: vec![0.0; outputs * features],
            bias: vec![0.0; outputs],
        }
    }

    /// `out = weight · x + bias` for one feature vector read with `stride` (1 for a dense
    /// vector, H*W for one cell of a channel-first feature map).
    fn apply(&self, x: &[f32], stride: usize, out: &mut [f32]) {
        for (o, value) in out.iter_mut().enumerate() {
            let row = &self.weight[o * self.features..][..self.features];
            *value = self.bias[o]
                + row
                    .iter()
                    .enumerate()
                    .map(|(f, w)| w * x[f * stride])
                    .sum::<f32>();
        }
    }

    /// Adds `gradient ⊗ x` (the gradient of the outputs, times the input) to `self`.
    fn accumulate(&mut self, gradient: &[f32], x: &[f32], stride: usize) {
        for (o, &g) in gradient.iter().enumerate() {
            if g == 0.0 {
                continue;
            }
            self.bias[o] += g;
            let row = &mut self.weight[o * self.features..][..self.features];
            for (f, w) in row.iter_mut().enumerate() {
                *w += g * x[f * stride];
            }
        }
    }
}

/// How long and how fast to train.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub epochs: u32,
    pub batch_size: u32,
    pub learning_rate: f32,
    pub seed: u64,
}

/// The common loop: per epoch, a seeded shuffle, then per batch the mean gradient of
/// `loss` (which adds a sample's gradient to its accumulator and returns its loss) and a
/// momentum step. Returns the mean loss of each epoch.
fn fit(
    head: &mut Head,
    samples: usize,
    schedule: &Schedule,
    loss: impl Fn(usize, &Head, &mut Head) -> f64,
) -> Result<Vec<f64>, String> {
    if samples == 0 {
        return Err("there are no training samples".into());
    }
    const MOMENTUM: f32 = 0.9;
    let mut velocity = Head::zeros(head.outputs, head.features);
    let mut order: Vec<usize> = (0..samples).collect();
    let mut random = schedule.seed ^ 0x5EED_5EED;
    let mut losses = Vec::with_capacity(schedule.epochs as usize);
    for epoch in 1..=schedule.epochs {
        for i in (1..order.len()).rev() {
            let j = (splitmix(&mut random) % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        let mut total = 0.0;
        for batch in order.chunks(schedule.batch_size as usize) {
            let mut gradient = Head::zeros(head.outputs, head.features);
            for &i in batch {
                total += loss(i, head, &mut gradient);
            }
            let step = schedule.learning_rate / batch.len() as f32;
            let params = head.weight.iter_mut().chain(head.bias.iter_mut());
            let velocities = velocity.weight.iter_mut().chain(velocity.bias.iter_mut());
            let gradients = gradient.weight.iter().chain(gradient.bias.iter());
            for ((p, v), g) in params.zip(velocities).zip(gradients) {
                *v = MOMENTUM * *v - step * g;
                *p += *v;
            }
        }
        let mean = total / samples as f64;
        if !mean.is_finite() || head.weight.iter().chain(&head.bias).any(|w| !w.is_finite()) {
            return Err(format!(
                "training diverged in epoch {epoch} (the loss is {mean}): lower `learning_rate` (now {})",
                schedule.learning_rate
            ));
        }
        losses.push(mean);
    }
    Ok(losses)
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Cross-entropy on a softmax classifier: `samples` are (features, class).
pub fn softmax_classifier(
    head: &mut Head,
    samples: &[(Vec<f32>, usize)],
    schedule: &Schedule,
) -> Result<Vec<f64>, String> {
    if let Some((features, _)) = samples.iter().find(|(f, _)| f.len() != head.features) {
        return Err(format!(
            "a sample has {} features, the head reads {}",
            features.len(),
            head.features
        ));
    }
    if let Some((_, class)) = samples.iter().find(|(_, c)| *c >= head.outputs) {
        return Err(format!(
            "class {class} is beyond the head's {} outputs",
            head.outputs
        ));
    }
    fit(head, samples.len(), schedule, |i, head, gradient| {
        let (features, class) = &samples[i];
        let mut logits = vec![0.0; head.outputs];
        head.apply(features, 1, &mut logits);
        let mut g = vec![0.0; head.outputs];
        softmax(&logits, &mut g);
        let loss = -(g[*class].max(1e-12) as f64).ln();
        g[*class] -= 1.0;
        gradient.accumulate(&g, features, 1);
        loss
    })
}

/// One sample for the grid head: its feature map `[F, rows, cols]` (channel first) and
/// its boxes in model-input pixels.
pub struct GridSample {
    pub features: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
    pub boxes: Vec<([f32; 4], u32)>,
}

/// The grid head's targets for one cell that holds a box centre.
struct CellTarget {
    x: f32,
    y: f32,
    w: f32,
    h: f32,
    class: usize,
}

/// The grid head (see `decode::grid`): objectness by binary cross-entropy on every cell,
/// the cells holding a box centre and the others weighted as two equal halves (a frame
/// has a handful of objects among hundreds of cells: unweighted, "nothing anywhere"
/// wins); centre, size (binary cross-entropy on their sigmoids) and
/// class (cross-entropy) on the cells holding a box centre (averaged over boxes). Where
/// two centres fall in one cell, the later box is the target.
pub fn grid_detector(
    head: &mut Head,
    samples: &[GridSample],
    classes: usize,
    input: (u32, u32),
    schedule: &Schedule,
) -> Result<Vec<f64>, String> {
    if head.outputs != 5 + classes {
        return Err(format!(
            "the head has {} outputs, the grid head needs 5 + {classes}",
            head.outputs
        ));
    }
    let mut targets = Vec::with_capacity(samples.len());
    for s in samples {
        if s.features.len() != head.features * s.rows * s.cols {
            return Err(format!(
                "a feature map holds {} values, not {} x {} x {}",
                s.features.len(),
                head.features,
                s.rows,
                s.cols
            ));
        }
        let (stride_x, stride_y) = (
            input.0 as f32 / s.cols as f32,
            input.1 as f32 / s.rows as f32,
        );
        let mut cells: Vec<Option<CellTarget>> = (0..s.rows * s.cols).map(|_| None).collect();
        for &(b, class) in &s.boxes {
            if class as usize >= classes {
                return Err(format!("class {class} is beyond the {classes} classes"));
            }
            let (cx, cy) = (
                (b[0] + b[2]) / 2.0 / stride_x,
                (b[1] + b[3]) / 2.0 / stride_y,
            );
            let (col, row) = (cx.floor(), cy.floor());
            if col < 0.0 || row < 0.0 || col >= s.cols as f32 || row >= s.rows as f32 {
                continue;
            }
            cells[row as usize * s.cols + col as usize] = Some(CellTarget {
                x: cx - col,
                y: cy - row,
                w: ((b[2] - b[0]) / input.0 as f32).clamp(0.0, 1.0),
                h: ((b[3] - b[1]) / input.1 as f32).clamp(0.0, 1.0),
                class: class as usize,
            });
        }
        targets.push(cells);
    }
    let bce = |p: f32, t: f32| -> f64 {
        let p = p.clamp(1e-7, 1.0 - 1e-7) as f64;
        -(t as f64 * p.ln() + (1.0 - t as f64) * (1.0 - p).ln())
    };
    fit(head, samples.len(), schedule, |i, head, gradient| {
        let (sample, cells) = (&samples[i], &targets[i]);
        let plane = sample.rows * sample.cols;
        let positives = cells.iter().filter(|c| c.is_some()).count().max(1) as f32;
        let mut out = vec![0.0; head.outputs];
        let mut g = vec![0.0; head.outputs];
        let mut probabilities = vec![0.0; classes];
        let mut loss = 0.0;
        for (cell, target) in cells.iter().enumerate() {
            let x = &sample.features[cell..];
            head.apply(x, plane, &mut out);
            g.fill(0.0);
            let objectness = sigmoid(out[0]);
            let (wanted, weight) = match target {
                Some(_) => (1.0, 1.0 / positives),
                None => (0.0, 1.0 / (plane as f32 - positives).max(1.0)),
            };
            loss += bce(objectness, wanted) * weight as f64;
            g[0] = (objectness - wanted) * weight;
            if let Some(t) = target {
                for (k, want) in [(1, t.x), (2, t.y), (3, t.w), (4, t.h)] {
                    let p = sigmoid(out[k]);
                    loss += bce(p, want) / positives as f64;
                    g[k] = (p - want) / positives;
                }
                softmax(&out[5..], &mut probabilities);
                loss -= (probabilities[t.class].max(1e-12) as f64).ln() / positives as f64;
                for (c, p) in probabilities.iter().enumerate() {
                    let onehot = if c == t.class { 1.0 } else { 0.0 };
                    g[5 + c] = (p - onehot) / positives;
                }
            }
            gradient.accumulate(&g, x, plane);
        }
        loss
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEDULE: Schedule = Schedule {
        epochs: 30,
        batch_size: 8,
        learning_rate: 0.5,
        seed: 7,
    };

    /// Two classes told apart by which feature is larger, plus a little noise.
    fn separable(count: usize, seed: u64) -> Vec<(Vec<f32>, usize)> {
        let mut state = seed;
        (0..count)
            .map(|i| {
                let class = i % 2;
                let noise = (splitmix(&mut state) % 1000) as f32 / 5000.0;
                let features = if class == 0 {
                    vec![1.0, noise]
                } else {
                    vec![noise, 1.0]
                };
                (features, class)
            })
            .collect()
    }

    fn accuracy(head: &Head, samples: &[(Vec<f32>, usize)]) -> f64 {
        let hits = samples
            .iter()
            .filter(|(f, c)| {
                let mut out = vec![0.0; head.outputs];
                head.apply(f, 1, &mut out);
                (out[1] > out[0]) == (*c == 1)
            })
            .count();
        hits as f64 / samples.len() as f64
    }

    #[test]
    fn training_lowers_the_loss_and_raises_held_out_accuracy() {
        let mut head = Head {
            outputs: 2,
            features: 2,
            weight: vec![0.0, 1.0, 1.0, 0.0],
            bias: vec![0.0; 2],
        };
        let held_out = separable(50, 99);
        assert!(accuracy(&head, &held_out) < 0.1, "starts wrong on purpose");
        let losses = softmax_classifier(&mut head, &separable(64, 1), &SCHEDULE).unwrap();
        assert!(losses.last().unwrap() < &(losses[0] / 4.0), "{losses:?}");
        assert_eq!(accuracy(&head, &held_out), 1.0);
    }

    #[test]
    fn the_same_seed_trains_the_same_head() {
        let train = |seed| {
            let mut head = Head::zeros(2, 2);
            softmax_classifier(
                &mut head,
                &separable(20, 3),
                &Schedule {
                    seed,
                    epochs: 2,
                    ..SCHEDULE
                },
            )
            .unwrap();
            head
        };
        assert_eq!(train(5), train(5));
        assert_ne!(train(5), train(6));
    }

    #[test]
    fn divergence_stops_with_an_error_naming_the_fix() {
        let mut head = Head::zeros(2, 2);
        let huge = vec![(vec![1e30, 1e30], 0), (vec![1e30, -1e30], 1)];
        let error = softmax_classifier(
            &mut head,
            &huge,
            &Schedule {
                learning_rate: 10.0,
                ..SCHEDULE
            },
        )
        .unwrap_err();
        assert!(
            error.contains("diverged") && error.contains("learning_rate"),
            "{error}"
        );
        let error = softmax_classifier(&mut head, &[], &SCHEDULE).unwrap_err();
        assert!(error.contains("no training samples"));
        let error = softmax_classifier(&mut head, &[(vec![1.0], 0)], &SCHEDULE).unwrap_err();
        assert!(error.contains("1 features, the head reads 2"));
    }

    #[test]
    fn the_grid_head_learns_where_objects_are() {
        // Feature 0 is 1 where an object's centre is, feature 1 is a constant 1 (a bias
        // channel). One class; a 2x2 grid over a 20x20 input.
        let sample = |cell: usize| {
            let mut features = vec![0.0; 2 * 4];
            features[cell] = 1.0;
            features[4..].fill(1.0);
            let (col, row) = ((cell % 2) as f32, (cell / 2) as f32);
            let corners = [
                col * 10.0 + 2.0,
                row * 10.0 + 2.0,
                col * 10.0 + 8.0,
                row * 10.0 + 8.0,
            ];
            GridSample {
                features,
                rows: 2,
                cols: 2,
                boxes: vec![(corners, 0)],
            }
        };
        let samples: Vec<GridSample> = (0..4).map(sample).collect();
        let mut head = Head::zeros(6, 2);
        let schedule = Schedule {
            epochs: 300,
            batch_size: 4,
            learning_rate: 1.0,
            seed: 1,
        };
        let losses = grid_detector(&mut head, &samples, 1, (20, 20), &schedule).unwrap();
        // Soft targets (centre 0.5, size 0.3) keep binary cross-entropy above ~2.6 here.
        assert!(
            losses.last().unwrap() < &(losses[0] - 0.8),
            "{:?}",
            (losses[0], losses.last())
        );
        // The object cell scores high, the others low; the decoded box is near the truth.
        let test = sample(3);
        let mut output = vec![0.0; 6 * 4];
        for cell in 0..4 {
            let mut out = vec![0.0; 6];
            head.apply(&test.features[cell..], 4, &mut out);
            for (o, v) in out.iter().enumerate() {
                output[o * 4 + cell] = *v;
            }
        }
        let found = crate::decode::grid(&output, &[1, 6, 2, 2], 1, (20, 20), 0.5).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        let iou = crate::decode::iou(&found[0].corners, &[12.0, 12.0, 18.0, 18.0]);
        assert!(iou > 0.7, "{found:?}");
    }
}
