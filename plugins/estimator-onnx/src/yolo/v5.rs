//! The classic YOLOv5 detection loss (Ultralytics' anchor-based head) on the output its
//! exports give: `[N, boxes, 5 + C]`, level by level (strides 8, 16, 32), anchor by anchor,
//! row by row, each box's centre and size in input pixels, its objectness and its class
//! scores, all after their sigmoid.
//!
//! As YOLOv5's `ComputeLoss` defines it: each object is matched, level by level, to the
//! anchors whose width and height ratios to it all stay below 4, in its own cell and in
//! the two neighbouring cells its centre is nearest; `1 - CIoU` on the matched boxes and
//! BCE of their class scores against the object's class (means per level); BCE of every
//! box's objectness against its match's CIoU (a constant of the step; 0 where nothing
//! matched), the levels weighted 4, 1 and 0.4. Gains as YOLOv5's `train.py` scales its
//! `hyp.scratch-low`: box 0.05, objectness `(side / 640)²`, class `0.5 x classes / 80`.

use super::{Boxes, STRIDES, bce, box_loss};
use crate::train::LossAndGradient;

/// YOLOv5's default anchors (width, height in input pixels; three per level).
pub const DEFAULT_ANCHORS: &str =
    "10,13, 16,30, 33,23, 30,61, 62,45, 59,119, 116,90, 156,198, 373,326";
/// An anchor matches an object whose sides are within this ratio of its own.
const ANCHOR_RATIO: f64 = 4.0;
/// The objectness loss of each level, from the finest.
const BALANCE: [f64; 3] = [4.0, 1.0, 0.4];
const BOX_GAIN: f64 = 0.05;
const OBJECT_GAIN: f64 = 1.0;
const CLASS_GAIN: f64 = 0.5;

/// The anchors of each level: width and height in input pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Anchors(Vec<Vec<[f64; 2]>>);

impl Anchors {
    /// The job parameter `anchors`: width,height pairs, the same number for each of the
    /// three levels, in stride order (YOLOv5's [`DEFAULT_ANCHORS`] when not given).
    pub fn parse(text: Option<&str>) -> Result<Self, String> {
        let text = text.unwrap_or(DEFAULT_ANCHORS);
        let wrong = |why: &str| {
            format!(
                "`anchors` is {text:?}: {why}; give width,height pairs in input pixels, the same number per level for the three levels (YOLOv5's default: {DEFAULT_ANCHORS}), as the model's `anchors` in its yaml"
            )
        };
        let numbers: Vec<f64> = text
            .split([',', ' ', ';'])
            .filter(|v| !v.is_empty())
            .map(|v| v.parse::<f64>().ok().filter(|n| n.is_finite() && *n > 0.0))
            .collect::<Option<_>>()
            .ok_or_else(|| wrong("a value is not a positive number"))?;
        if numbers.is_empty() || !numbers.len().is_multiple_of(2 * STRIDES.len()) {
            return Err(wrong(&format!("{} numbers", numbers.len())));
        }
        let per_level = numbers.len() / STRIDES.len();
        Ok(Anchors(
            numbers
                .chunks(per_level)
                .map(|level| level.chunks(2).map(|p| [p[0], p[1]]).collect())
                .collect(),
        ))
    }
}

/// Where a level's boxes sit in the output.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Level {
    offset: usize,
    rows: usize,
    cols: usize,
    anchors: usize,
    stride: f64,
}

impl Level {
    fn boxes(&self) -> usize {
        self.anchors * self.rows * self.cols
    }
}

/// The levels of an input of `input` (width, height) with `anchors`, checked against the
/// output's `count` boxes.
fn levels(anchors: &Anchors, input: (u32, u32), count: usize) -> Result<Vec<Level>, String> {
    let mut offset = 0;
    let levels: Vec<Level> = STRIDES
        .iter()
        .zip(&anchors.0)
        .map(|(&stride, sizes)| {
            let level = Level {
                offset,
                rows: (input.1 / stride) as usize,
                cols: (input.0 / stride) as usize,
                anchors: sizes.len(),
                stride: stride as f64,
            };
            offset += level.boxes();
            level
        })
        .collect();
    if offset != count {
        return Err(format!(
            "the output holds {count} boxes; a {}x{} input with {} anchors per level at strides 8, 16 and 32 gives {offset}: check the model's input size (`input_shape`) and `anchors`",
            input.0,
            input.1,
            anchors.0[0].len()
        ));
    }
    Ok(levels)
}

/// An object matched to one of the output's boxes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Match {
    pub sample: usize,
    pub object: usize,
    /// The box's index in the output.
    pub index: usize,
}

/// Each level's matches: per object, the anchors of a fitting size in its cell and the two
/// neighbouring cells nearest its centre. An object no anchor fits (four times smaller or
/// larger than every one) trains nothing, as in YOLOv5.
fn assign(boxes: &Boxes, anchors: &Anchors, levels: &[Level]) -> Vec<Vec<Match>> {
    levels
        .iter()
        .zip(&anchors.0)
        .map(|(level, sizes)| {
            let mut matches = Vec::new();
            for (sample, objects) in boxes.iter().enumerate() {
                for (object, (b, _)) in objects.iter().enumerate() {
                    let b = b.map(f64::from);
                    let (w, h) = (b[2] - b[0], b[3] - b[1]);
                    if w <= 0.0 || h <= 0.0 {
                        continue;
                    }
                    let gx = (b[0] + b[2]) / 2.0 / level.stride;
                    let gy = (b[1] + b[3]) / 2.0 / level.stride;
                    let (ix, iy) = (level.cols as f64 - gx, level.rows as f64 - gy);
                    let mut cells = vec![(gx, gy)];
                    if gx.fract() < 0.5 && gx > 1.0 {
                        cells.push((gx - 0.5, gy));
                    }
                    if gy.fract() < 0.5 && gy > 1.0 {
                        cells.push((gx, gy - 0.5));
                    }
                    if ix.fract() < 0.5 && ix > 1.0 {
                        cells.push((gx + 0.5, gy));
                    }
                    if iy.fract() < 0.5 && iy > 1.0 {
                        cells.push((gx, gy + 0.5));
                    }
                    for (a, [aw, ah]) in sizes.iter().enumerate() {
                        let ratio = (w / aw).max(aw / w).max(h / ah).max(ah / h);
                        if ratio >= ANCHOR_RATIO {
                            continue;
                        }
                        for &(x, y) in &cells {
                            let col = (x.floor().max(0.0) as usize).min(level.cols - 1);
                            let row = (y.floor().max(0.0) as usize).min(level.rows - 1);
                            let index = level.offset + (a * level.rows + row) * level.cols + col;
                            matches.push(Match {
                                sample,
                                object,
                                index,
                            });
                        }
                    }
                }
            }
            matches
        })
        .collect()
}

/// The loss of a batch of outputs `[N, boxes, 5 + classes]` against `boxes` (per sample,
/// corners in input pixels, class), and its gradient with respect to the output.
pub fn loss(
    output: &[f32],
    dims: &[u32],
    classes: usize,
    input: (u32, u32),
    boxes: &Boxes,
    anchors: &Anchors,
) -> Result<LossAndGradient, String> {
    let &[n, count, channels] = dims else {
        return Err(format!(
            "the output is {dims:?}, not YOLOv5's [N, boxes, 5 + classes]"
        ));
    };
    let (n, count, channels) = (n as usize, count as usize, channels as usize);
    if channels != 5 + classes || n != boxes.len() || output.len() != n * count * channels {
        return Err(format!(
            "the output is {dims:?}: {} samples of 5 + {classes} values per box were expected",
            boxes.len()
        ));
    }
    if let Some((_, class)) = boxes.iter().flatten().find(|(_, c)| *c as usize >= classes) {
        return Err(format!("class {class} is beyond the {classes} classes"));
    }
    let levels = levels(anchors, input, count)?;
    let matched = assign(boxes, anchors, &levels);
    let at = |sample: usize, index: usize| (sample * count + index) * channels;
    let side = input.0.max(input.1) as f64 / 640.0;
    let (object_gain, class_gain) = (
        OBJECT_GAIN * side * side,
        CLASS_GAIN * classes as f64 / 80.0,
    );
    let mut gradient = vec![0.0f32; output.len()];
    let mut objectness = vec![0.0f64; n * count];
    let (mut box_total, mut object_total, mut class_total) = (0.0, 0.0, 0.0);
    for ((level, matches), balance) in levels.iter().zip(&matched).zip(BALANCE) {
        let m = matches.len() as f64;
        for found in matches {
            let base = at(found.sample, found.index);
            let (truth, class) = boxes[found.sample][found.object];
            let values = std::array::from_fn(|c| output[base + c]);
            let (loss, slopes) = box_loss(values, truth.map(f64::from));
            box_total += loss / m;
            for (c, slope) in slopes.into_iter().enumerate() {
                gradient[base + c] += (BOX_GAIN * slope / m) as f32;
            }
            objectness[found.sample * count + found.index] = (1.0 - loss).max(0.0);
            // One class has nothing to tell apart: YOLOv5 leaves its score untrained.
            if classes > 1 {
                let scale = m * classes as f64;
                for c in 0..classes {
                    let wanted = if c == class as usize { 1.0 } else { 0.0 };
                    let (loss, slope) = bce(output[base + 5 + c], wanted);
                    class_total += loss / scale;
                    gradient[base + 5 + c] += (class_gain * slope / scale) as f32;
                }
            }
        }
        let cells = (n * level.boxes()) as f64;
        for sample in 0..n {
            for index in level.offset..level.offset + level.boxes() {
                let k = at(sample, index) + 4;
                let (loss, slope) = bce(output[k], objectness[sample * count + index]);
                object_total += balance * loss / cells;
                gradient[k] += (object_gain * balance * slope / cells) as f32;
            }
        }
    }
    let loss = BOX_GAIN * box_total + object_gain * object_total + class_gain * class_total;
    Ok((loss, gradient))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64x64 input: 3 x (64 + 16 + 4) boxes.
    const SIZE: (u32, u32) = (64, 64);
    const COUNT: usize = 252;

    fn default_levels() -> (Anchors, Vec<Level>) {
        let anchors = Anchors::parse(None).unwrap();
        let levels = levels(&anchors, SIZE, COUNT).unwrap();
        (anchors, levels)
    }

    /// An output that predicts `predicted` (corners, class) at every box matched to it,
    /// and small boxes, objectness and scores everywhere else.
    fn output(predicted: &[([f32; 4], u32)], classes: usize) -> Vec<f32> {
        let (anchors, levels) = default_levels();
        let channels = 5 + classes;
        let mut out = vec![0.02f32; COUNT * channels];
        for k in 0..COUNT {
            out[k * channels + 2] = 4.0;
            out[k * channels + 3] = 4.0;
        }
        for found in assign(&[predicted.to_vec()], &anchors, &levels)
            .iter()
            .flatten()
        {
            let (b, class) = predicted[found.object];
            let row = &mut out[found.index * channels..][..channels];
            row[..4].copy_from_slice(&[
                (b[0] + b[2]) / 2.0,
                (b[1] + b[3]) / 2.0,
                b[2] - b[0],
                b[3] - b[1],
            ]);
            row[4] = 0.9;
            row[5 + class as usize] = 0.9;
        }
        out
    }

    #[test]
    fn anchors_parse_and_bad_ones_are_explained() {
        let a = Anchors::parse(None).unwrap();
        assert_eq!(a.0.len(), 3);
        assert_eq!(a.0[0], [[10.0, 13.0], [16.0, 30.0], [33.0, 23.0]]);
        assert_eq!(a.0[2][2], [373.0, 326.0]);
        let two = Anchors::parse(Some("4,5 8,9; 16,20 30,32; 60,70 90,100")).unwrap();
        assert_eq!(two.0[1], [[16.0, 20.0], [30.0, 32.0]]);
        for bad in ["10,13,16", "10,13,x,30,33,23", "", "0,1,1,1,1,1"] {
            let err = Anchors::parse(Some(bad)).unwrap_err();
            assert!(err.contains("`anchors`") && err.contains("10,13"), "{err}");
        }
    }

    #[test]
    fn levels_follow_the_exports_layout_and_a_wrong_count_is_named() {
        let (anchors, levels) = default_levels();
        assert_eq!(
            levels
                .iter()
                .map(|l| (l.offset, l.cols))
                .collect::<Vec<_>>(),
            [(0, 8), (192, 4), (240, 2)]
        );
        let err = super::levels(&anchors, SIZE, 8400).unwrap_err();
        assert!(
            err.contains("gives 252") && err.contains("input_shape") && err.contains("anchors"),
            "{err}"
        );
    }

    #[test]
    fn an_object_matches_its_cell_and_the_two_nearest_neighbours() {
        let (anchors, levels) = default_levels();
        // Centre (3.3, 5.7) cells at stride 8; 16x30 pixels, anchor 1 of level 0 exactly.
        let b = [26.4 - 8.0, 45.6 - 15.0, 26.4 + 8.0, 45.6 + 15.0];
        let matched = assign(&[vec![(b, 0)]], &anchors, &levels);
        let cells = |a: usize| -> Vec<(usize, usize)> {
            let mut c: Vec<(usize, usize)> = matched[0]
                .iter()
                .filter(|m| m.index / 64 == a)
                .map(|m| (m.index % 8, m.index % 64 / 8))
                .collect();
            c.sort();
            c
        };
        assert_eq!(cells(1), [(2, 5), (3, 5), (3, 6)], "own, left, below");
        assert_eq!(
            matched[0].len(),
            9,
            "16x30 is within 4x of all three small anchors"
        );
        assert!(
            matched[2].is_empty(),
            "116x90 and larger are over 4x its size"
        );
        let tiny = assign(&[vec![([30.0, 30.0, 32.0, 32.0], 0)]], &anchors, &levels);
        assert!(tiny.iter().all(Vec::is_empty), "2x2: no anchor fits");
    }

    #[test]
    fn the_right_prediction_costs_less_than_a_shifted_or_wrong_one() {
        let anchors = Anchors::parse(None).unwrap();
        let truth = [vec![([8.0, 8.0, 40.0, 32.0], 1)]];
        let dims = [1, COUNT as u32, 7];
        let cost = |out: &[f32]| loss(out, &dims, 2, SIZE, &truth, &anchors).unwrap().0;
        let right = cost(&output(&truth[0], 2));
        let shifted = cost(&output(&[([14.0, 14.0, 46.0, 38.0], 1)], 2));
        let wrong_class = cost(&output(&[([8.0, 8.0, 40.0, 32.0], 0)], 2));
        let nothing = cost(&output(&[], 2));
        assert!(
            right < shifted && right < wrong_class && right < nothing,
            "{right} {shifted} {wrong_class} {nothing}"
        );
    }

    #[test]
    fn the_gradient_of_the_scores_is_the_gradient_of_the_loss() {
        let anchors = Anchors::parse(None).unwrap();
        let truth = [
            vec![([8.0, 8.0, 40.0, 32.0], 1)],
            vec![([30.0, 20.0, 60.0, 60.0], 0), ([2.0, 2.0, 20.0, 20.0], 2)],
        ];
        let dims = [2, COUNT as u32, 8];
        let mut out = output(&[([10.0, 6.0, 44.0, 30.0], 0)], 3);
        out.extend(output(&[([28.0, 24.0, 58.0, 62.0], 1)], 3));
        // Scores away from the clamp, each its own.
        for (k, v) in out.iter_mut().enumerate() {
            if k % 8 >= 4 {
                *v = 0.1 + 0.8 * ((k * 7919) % 97) as f32 / 97.0;
            }
        }
        let cost = |o: &[f32]| loss(o, &dims, 3, SIZE, &truth, &anchors).unwrap();
        let (_, gradient) = cost(&out);
        let mut checked = 0;
        for k in (0..out.len()).filter(|k| k % 8 >= 4).step_by(13) {
            let (mut plus, mut minus) = (out.clone(), out.clone());
            plus[k] += 1e-3;
            minus[k] -= 1e-3;
            let slope = (cost(&plus).0 - cost(&minus).0) / 2e-3;
            assert!(
                (slope - gradient[k] as f64).abs() < 1e-6 + 1e-2 * slope.abs(),
                "value {k}: {slope} against {}",
                gradient[k]
            );
            checked += 1;
        }
        assert!(checked > 100);
        let boxes = (0..out.len()).filter(|k| k % 8 < 4 && gradient[*k] != 0.0);
        assert!(boxes.count() >= 4 * 9, "the matched boxes have gradients");
    }

    #[test]
    fn bad_outputs_and_classes_are_refused() {
        let anchors = Anchors::parse(None).unwrap();
        let err = loss(&[0.0; 12], &[1, 12], 2, SIZE, &[vec![]], &anchors).unwrap_err();
        assert!(err.contains("[N, boxes, 5 + classes]"), "{err}");
        let err = loss(&[0.0; 6 * 252], &[1, 252, 6], 2, SIZE, &[vec![]], &anchors).unwrap_err();
        assert!(err.contains("5 + 2 values"), "{err}");
        let out = output(&[], 2);
        let truth = [vec![([8.0, 8.0, 40.0, 32.0], 5)]];
        let err = loss(&out, &[1, 252, 7], 2, SIZE, &truth, &anchors).unwrap_err();
        assert!(err.contains("class 5 is beyond the 2 classes"), "{err}");
    }
}
