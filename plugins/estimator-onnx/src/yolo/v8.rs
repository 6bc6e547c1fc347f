//! The YOLOv8 detection loss, as Ultralytics defines it, on the output its exports give
//! (`[N, 4 + C, anchors]`: box centre and size in input pixels, then class scores after
//! their sigmoid); it also trains YOLO11 and YOLOv5nu exports, whose heads are the same.
//!
//! Task-aligned assignment (each object takes the `TOP_K` anchors inside it whose
//! `score^0.5 * CIoU^6` is highest; an anchor claimed twice goes to the object it overlaps
//! most), binary cross-entropy on every class score against the normalised alignment,
//! `1 - CIoU` on the assigned boxes, and the distribution focal loss on the assigned
//! anchors' box distributions (the logits before the DFL, `[N, bins, 4, anchors]`, which
//! [`distributions`] finds in the graph), weighted as Ultralytics weighs them (box 7.5,
//! class 0.5, DFL 1.5). The assignment is a constant of the step, as in Ultralytics.

use sedna_plugin_sdk::estimator::inference::NodeInfo;

use super::{Boxes, EPS, STRIDES, bce, box_loss, ciou, corners};

const TOP_K: usize = 10;
const ALPHA: f64 = 0.5;
const BETA: f64 = 6.0;
const BOX_GAIN: f64 = 7.5;
const CLASS_GAIN: f64 = 0.5;
const DFL_GAIN: f64 = 1.5;

/// An anchor: its centre in input pixels and the stride of its level.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Anchor {
    pub x: f64,
    pub y: f64,
    pub stride: f64,
}

/// The anchors, level by level, row by row.
pub fn anchors(width: u32, height: u32, count: usize) -> Result<Vec<Anchor>, String> {
    let mut out = Vec::with_capacity(count);
    for s in STRIDES {
        for row in 0..height / s {
            for col in 0..width / s {
                out.push(Anchor {
                    x: (col as f64 + 0.5) * s as f64,
                    y: (row as f64 + 0.5) * s as f64,
                    stride: s as f64,
                });
            }
        }
    }
    if out.len() != count {
        return Err(format!(
            "the output holds {count} boxes; a {width}x{height} input with strides 8, 16 and 32 gives {}: check the model's input size (`input_shape`)",
            out.len()
        ));
    }
    Ok(out)
}

/// The value a YOLOv8 head's DFL reads: the input of the Softmax whose output a Conv (the
/// fixed expectation over the bins) reads. `None` when the graph has no such pair.
pub fn distributions(nodes: &[NodeInfo]) -> Option<String> {
    nodes
        .iter()
        .filter(|n| n.op_type == "Softmax")
        .find(|softmax| {
            nodes.iter().any(|n| {
                n.op_type == "Conv"
                    && n.inputs
                        .first()
                        .is_some_and(|i| softmax.outputs.contains(i))
            })
        })
        .and_then(|softmax| softmax.inputs.first().cloned())
}

/// One anchor an object claimed: its alignment metric and its overlap with the object.
#[derive(Clone, Copy)]
struct Claim {
    object: usize,
    align: f64,
    overlap: f64,
}

/// The box distributions before the DFL: logits `[N, bins, 4, anchors]`, the sides in
/// the DFL's order (left, top, right, bottom) in stride units.
pub struct Distributions<'a> {
    pub logits: &'a [f32],
    pub dims: &'a [u32],
}

/// A batch's loss and its gradients: with respect to the output, and to the box
/// distributions when they were given.
pub struct YoloLoss {
    pub loss: f64,
    pub output: Vec<f32>,
    pub distributions: Option<Vec<f32>>,
}

/// The loss of a batch of outputs `[N, 4 + classes, anchors]` against `boxes` (per
/// sample, corners in input pixels, class), with the DFL term when `distributions` are
/// given, and its gradients.
pub fn loss(
    output: &[f32],
    dims: &[u32],
    classes: usize,
    input: (u32, u32),
    boxes: &Boxes,
    distributions: Option<Distributions>,
) -> Result<YoloLoss, String> {
    let &[n, channels, count] = dims else {
        return Err(format!(
            "the output is {dims:?}, not YOLOv8's [N, 4 + classes, boxes]"
        ));
    };
    let (n, channels, count) = (n as usize, channels as usize, count as usize);
    if channels != 4 + classes || n != boxes.len() || output.len() != n * channels * count {
        return Err(format!(
            "the output is {dims:?}: {} samples of 4 + {classes} channels were expected",
            boxes.len()
        ));
    }
    let bins = match &distributions {
        Some(d) => match *d.dims {
            [dn, bins, 4, dc]
                if dn as usize == n
                    && dc as usize == count
                    && bins >= 2
                    && d.logits.len() == n * bins as usize * 4 * count =>
            {
                bins as usize
            }
            _ => {
                return Err(format!(
                    "the box distributions are {:?}, not [{n}, bins, 4, {count}] as the output {dims:?} needs",
                    d.dims
                ));
            }
        },
        None => 0,
    };
    let anchors = anchors(input.0, input.1, count)?;
    let at = |i: usize, channel: usize, a: usize| (i * channels + channel) * count + a;
    // Per sample: for each anchor, its object and normalised target score.
    let mut targets: Vec<Vec<Option<(usize, f64)>>> = Vec::with_capacity(n);
    let mut score_sum = 0.0;
    for (i, objects) in boxes.iter().enumerate() {
        let predicted = |a: usize| {
            let v = |c| output[at(i, c, a)] as f64;
            corners(v(0), v(1), v(2), v(3))
        };
        let mut claims: Vec<Option<Claim>> = vec![None; count];
        let mut best: Vec<(f64, f64)> = vec![(0.0, 0.0); objects.len()];
        for (object, &(b, class)) in objects.iter().enumerate() {
            if class as usize >= classes {
                return Err(format!("class {class} is beyond the {classes} classes"));
            }
            let truth = b.map(|v| v as f64);
            let mut candidates: Vec<(usize, f64, f64)> = anchors
                .iter()
                .enumerate()
                .filter(|(_, p)| {
                    p.x - truth[0] > EPS
                        && p.y - truth[1] > EPS
                        && truth[2] - p.x > EPS
                        && truth[3] - p.y > EPS
                })
                .map(|(a, _)| {
                    let overlap = ciou(truth, predicted(a)).max(0.0);
                    let score = output[at(i, 4 + class as usize, a)] as f64;
                    (a, score.max(0.0).powf(ALPHA) * overlap.powf(BETA), overlap)
                })
                .collect();
            candidates.sort_by(|x, y| y.1.total_cmp(&x.1));
            for &(a, align, overlap) in candidates.iter().take(TOP_K) {
                let claim = Claim {
                    object,
                    align,
                    overlap,
                };
                match claims[a] {
                    Some(other) if other.overlap >= overlap => {}
                    _ => claims[a] = Some(claim),
                }
            }
        }
        for claim in claims.iter().flatten() {
            let b = &mut best[claim.object];
            b.0 = b.0.max(claim.align);
            b.1 = b.1.max(claim.overlap);
        }
        let sample: Vec<Option<(usize, f64)>> = claims
            .iter()
            .map(|claim| {
                claim.map(|c| {
                    let (align_max, overlap_max) = best[c.object];
                    (c.object, c.align * overlap_max / (align_max + EPS))
                })
            })
            .collect();
        score_sum += sample.iter().flatten().map(|(_, t)| t).sum::<f64>();
        targets.push(sample);
    }
    let score_sum = score_sum.max(1.0);
    let mut gradient = vec![0.0f32; output.len()];
    let mut dist_gradient = distributions.as_ref().map(|d| vec![0.0f32; d.logits.len()]);
    let (mut class_loss, mut box_total, mut dfl_loss) = (0.0, 0.0, 0.0);
    for (i, objects) in boxes.iter().enumerate() {
        for a in 0..count {
            let target = targets[i][a];
            for c in 0..classes {
                let k = at(i, 4 + c, a);
                let t = match target {
                    Some((object, score)) if objects[object].1 as usize == c => score,
                    _ => 0.0,
                };
                let (loss, slope) = bce(output[k], t);
                class_loss += loss;
                gradient[k] = (CLASS_GAIN * slope / score_sum) as f32;
            }
            let Some((object, weight)) = target else {
                continue;
            };
            let truth = objects[object].0.map(|v| v as f64);
            let values: [f32; 4] = std::array::from_fn(|c| output[at(i, c, a)]);
            let (loss, slopes) = box_loss(values, truth);
            box_total += loss * weight;
            for (c, slope) in slopes.into_iter().enumerate() {
                gradient[at(i, c, a)] = (BOX_GAIN * slope * weight / score_sum) as f32;
            }
            if let (Some(d), Some(g)) = (&distributions, dist_gradient.as_mut()) {
                let anchor = anchors[a];
                let sides = [
                    anchor.x - truth[0],
                    anchor.y - truth[1],
                    truth[2] - anchor.x,
                    truth[3] - anchor.y,
                ];
                let scale = DFL_GAIN * weight / 4.0 / score_sum;
                for (side, distance) in sides.into_iter().enumerate() {
                    let bin = |j: usize| ((i * bins + j) * 4 + side) * count + a;
                    let target = (distance / anchor.stride).clamp(0.0, bins as f64 - 1.01);
                    dfl_loss +=
                        weight / 4.0 * focal_distribution(d.logits, bin, bins, target, scale, g);
                }
            }
        }
    }
    let loss = (BOX_GAIN * box_total + CLASS_GAIN * class_loss + DFL_GAIN * dfl_loss) / score_sum;
    Ok(YoloLoss {
        loss,
        output: gradient,
        distributions: dist_gradient,
    })
}

/// One side's distribution focal loss: cross-entropy of the bins' softmax against the two
/// bins around `target`, weighted by nearness (Ultralytics' `DFLoss`). Adds its gradient
/// with respect to the logits, times `scale`, into `gradient`; returns the loss.
fn focal_distribution(
    logits: &[f32],
    bin: impl Fn(usize) -> usize,
    bins: usize,
    target: f64,
    scale: f64,
    gradient: &mut [f32],
) -> f64 {
    let left = target.floor() as usize;
    let (w_left, w_right) = (left as f64 + 1.0 - target, target - left as f64);
    let max = (0..bins)
        .map(|j| logits[bin(j)] as f64)
        .fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = (0..bins).map(|j| (logits[bin(j)] as f64 - max).exp()).sum();
    let log_p = |j: usize| logits[bin(j)] as f64 - max - sum.ln();
    for j in 0..bins {
        let wanted = match j {
            _ if j == left => w_left,
            _ if j == left + 1 => w_right,
            _ => 0.0,
        };
        gradient[bin(j)] += ((log_p(j).exp() - wanted) * scale) as f32;
    }
    -(w_left * log_p(left) + w_right * log_p(left + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64x64 input: 64 + 16 + 4 anchors.
    const SIZE: (u32, u32) = (64, 64);
    const COUNT: u32 = 84;

    /// An output predicting `boxes` (centre, size, class) at every anchor inside them,
    /// and little elsewhere.
    fn output(predicted: &[([f32; 4], usize)], classes: usize, shift: f32) -> Vec<f32> {
        let anchors = anchors(SIZE.0, SIZE.1, COUNT as usize).unwrap();
        let count = COUNT as usize;
        let mut out = vec![0.01f32; (4 + classes) * count];
        for (a, p) in anchors.iter().map(|p| [p.x, p.y]).enumerate() {
            out[a] = p[0] as f32;
            out[count + a] = p[1] as f32;
            out[2 * count + a] = 8.0;
            out[3 * count + a] = 8.0;
            for (b, class) in predicted {
                let inside = p[0] as f32 > b[0]
                    && (p[0] as f32) < b[2]
                    && p[1] as f32 > b[1]
                    && (p[1] as f32) < b[3];
                if inside {
                    out[a] = (b[0] + b[2]) / 2.0 + shift;
                    out[count + a] = (b[1] + b[3]) / 2.0 + shift;
                    out[2 * count + a] = b[2] - b[0];
                    out[3 * count + a] = b[3] - b[1];
                    out[(4 + class) * count + a] = 0.9;
                }
            }
        }
        out
    }

    #[test]
    fn anchors_follow_the_exports_layout_and_a_wrong_size_is_named() {
        let a = anchors(64, 64, 84).unwrap();
        let at = |k: usize| [a[k].x, a[k].y, a[k].stride];
        assert_eq!(at(0), [4.0, 4.0, 8.0]);
        assert_eq!(at(64), [8.0, 8.0, 16.0]);
        assert_eq!(at(83), [48.0, 48.0, 32.0]);
        let err = anchors(64, 64, 8400).unwrap_err();
        assert!(
            err.contains("gives 84") && err.contains("input_shape"),
            "{err}"
        );
    }

    #[test]
    fn the_right_prediction_costs_less_than_a_shifted_or_wrong_one() {
        let truth = vec![vec![([8.0, 8.0, 40.0, 32.0], 1)]];
        let dims = [1, 6, COUNT];
        let loss = |out: &[f32]| super::loss(out, &dims, 2, SIZE, &truth, None).unwrap().loss;
        let right = loss(&output(&[([8.0, 8.0, 40.0, 32.0], 1)], 2, 0.0));
        let shifted = loss(&output(&[([8.0, 8.0, 40.0, 32.0], 1)], 2, 6.0));
        let wrong_class = loss(&output(&[([8.0, 8.0, 40.0, 32.0], 0)], 2, 0.0));
        assert!(
            right < shifted && right < wrong_class,
            "{right} {shifted} {wrong_class}"
        );
    }

    #[test]
    fn a_step_against_the_gradient_lowers_the_loss() {
        let truth = vec![
            vec![([8.0, 8.0, 40.0, 32.0], 1)],
            vec![([30.0, 20.0, 60.0, 60.0], 0), ([2.0, 2.0, 20.0, 20.0], 1)],
        ];
        let dims = [2, 6, COUNT];
        let mut out = output(&[([10.0, 6.0, 44.0, 30.0], 0)], 2, 2.0);
        out.extend(output(&[([28.0, 24.0, 58.0, 62.0], 1)], 2, 1.0));
        let YoloLoss {
            loss: before,
            output: gradient,
            ..
        } = super::loss(&out, &dims, 2, SIZE, &truth, None).unwrap();
        let stepped: Vec<f32> = out
            .iter()
            .zip(&gradient)
            .enumerate()
            .map(|(k, (v, g))| {
                // Scores step in logit space as the graph's sigmoid would carry them.
                let channel = (k / COUNT as usize) % 6;
                if channel >= 4 {
                    let p = v.clamp(1e-6, 1.0 - 1e-6);
                    let logit = (p / (1.0 - p)).ln() - 0.5 * g * p * (1.0 - p);
                    1.0 / (1.0 + (-logit).exp())
                } else {
                    v - 0.5 * g
                }
            })
            .collect();
        let after = super::loss(&stepped, &dims, 2, SIZE, &truth, None)
            .unwrap()
            .loss;
        assert!(after < before, "{before} -> {after}");
    }

    #[test]
    fn bad_outputs_are_refused_with_their_shape() {
        let err = super::loss(&[0.0; 12], &[1, 12], 2, SIZE, &[vec![]], None)
            .err()
            .unwrap();
        assert!(err.contains("[N, 4 + classes, boxes]"), "{err}");
        let err = super::loss(&[0.0; 5 * 84], &[1, 5, 84], 2, SIZE, &[vec![]], None)
            .err()
            .unwrap();
        assert!(err.contains("4 + 2 channels"), "{err}");
        let logits = [0.0; 16 * 4 * 80];
        let wrong = Distributions {
            logits: &logits,
            dims: &[1, 16, 4, 80],
        };
        let err = super::loss(&[0.0; 6 * 84], &[1, 6, 84], 2, SIZE, &[vec![]], Some(wrong))
            .err()
            .unwrap();
        assert!(err.contains("not [1, bins, 4, 84]"), "{err}");
    }

    /// Logits `[1, 16, 4, COUNT]` with a little of everything.
    fn logits(seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..16 * 4 * COUNT as usize)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 33) as f32 / (1u64 << 31) as f32) * 4.0 - 2.0
            })
            .collect()
    }

    #[test]
    fn the_distribution_gradient_is_the_gradient_of_the_dfl_term() {
        let truth = vec![vec![
            ([8.0, 8.0, 40.0, 32.0], 1),
            ([30.0, 20.0, 60.0, 60.0], 0),
        ]];
        let dims = [1, 6, COUNT];
        let out = output(&[([10.0, 6.0, 44.0, 30.0], 1)], 2, 2.0);
        let ddims = [1, 16, 4, COUNT];
        let loss = |l: &[f32]| {
            let d = Distributions {
                logits: l,
                dims: &ddims,
            };
            super::loss(&out, &dims, 2, SIZE, &truth, Some(d)).unwrap()
        };
        let base = logits(7);
        let with = loss(&base);
        let without = super::loss(&out, &dims, 2, SIZE, &truth, None).unwrap();
        assert!(with.loss > without.loss, "the DFL adds to the loss");
        assert_eq!(with.output, without.output, "the assignment is the same");
        let gradient = with.distributions.unwrap();
        let touched: Vec<usize> = (0..base.len()).filter(|&k| gradient[k] != 0.0).collect();
        assert!(
            touched.len() >= 16 * 4,
            "an assigned anchor's 4 sides: {touched:?}"
        );
        for &k in touched.iter().step_by(7) {
            let (mut plus, mut minus) = (base.clone(), base.clone());
            plus[k] += 1e-2;
            minus[k] -= 1e-2;
            let slope = (loss(&plus).loss - loss(&minus).loss) / 2e-2;
            assert!(
                (slope - gradient[k] as f64).abs() < 1e-3 + 1e-2 * slope.abs(),
                "logit {k}: {slope} against {}",
                gradient[k]
            );
        }
    }

    #[test]
    fn distributions_peaked_at_the_true_distances_cost_least() {
        let truth = vec![vec![([8.0, 8.0, 40.0, 32.0], 1)]];
        let dims = [1, 6, COUNT];
        let out = output(&[([8.0, 8.0, 40.0, 32.0], 1)], 2, 0.0);
        let ddims = [1, 16, 4, COUNT];
        let anchors = anchors(SIZE.0, SIZE.1, COUNT as usize).unwrap();
        // Each side's logits peak at `bin(true distance) + offset`.
        let peaked = |offset: f64| -> Vec<f32> {
            let mut l = vec![0.0f32; 16 * 4 * COUNT as usize];
            for (a, p) in anchors.iter().enumerate() {
                let sides = [p.x - 8.0, p.y - 8.0, 40.0 - p.x, 32.0 - p.y];
                for (side, d) in sides.into_iter().enumerate() {
                    let centre = (d / p.stride + offset).clamp(0.0, 15.0);
                    for j in 0..16 {
                        l[((j * 4) + side) * COUNT as usize + a] =
                            (-4.0 * (j as f64 - centre).powi(2)) as f32;
                    }
                }
            }
            l
        };
        let loss = |l: &[f32]| {
            let d = Distributions {
                logits: l,
                dims: &ddims,
            };
            super::loss(&out, &dims, 2, SIZE, &truth, Some(d))
                .unwrap()
                .loss
        };
        let (right, off) = (loss(&peaked(0.0)), loss(&peaked(2.0)));
        assert!(right < off, "{right} {off}");
    }

    #[test]
    fn the_dfl_input_is_found_by_structure() {
        let node = |op: &str, inputs: &[&str], outputs: &[&str]| NodeInfo {
            name: String::new(),
            op_type: op.into(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
        };
        let head = [
            node("Softmax", &["cls"], &["probabilities"]),
            node("Transpose", &["split"], &["logits"]),
            node("Softmax", &["logits"], &["bins"]),
            node("Conv", &["bins", "dfl.conv.weight"], &["expectation"]),
        ];
        assert_eq!(distributions(&head).as_deref(), Some("logits"));
        assert_eq!(distributions(&head[..2]), None);
    }
}
