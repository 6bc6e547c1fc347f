//! From a model's raw output to boxes: the three detection layouts, and class-wise
//! non-maximum suppression. Boxes here are in model-input pixels.

/// One detected box: corners `[x1, y1, x2, y2]`, score in [0, 1], class index.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    pub corners: [f32; 4],
    pub score: f32,
    pub class: u32,
}

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Softmax of `logits` into `out` (same length), stable for large logits.
pub fn softmax(logits: &[f32], out: &mut [f32]) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for (o, &l) in out.iter_mut().zip(logits) {
        *o = (l - max).exp();
        sum += *o;
    }
    for o in out.iter_mut() {
        *o /= sum;
    }
}

fn corners(cx: f32, cy: f32, w: f32, h: f32) -> [f32; 4] {
    [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
}

fn best_class(scores: impl Iterator<Item = f32>) -> (u32, f32) {
    scores
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, s)| {
            if s > best.1 { (i as u32, s) } else { best }
        })
}

/// Checks a `[1, a, b]` output whose axis `axis` holds `width` values.
fn expect_layout(
    dims: &[usize],
    len: usize,
    axis: usize,
    width: usize,
    layout: &str,
) -> Result<(), String> {
    let ok = dims.len() == 3 && dims[0] == 1 && dims[axis] == width;
    if !ok || dims.iter().product::<usize>() != len {
        return Err(format!("the output is {dims:?}, not {layout}"));
    }
    Ok(())
}

/// The project's grid head, `[1, 5 + C, H, W]`: per cell, channel 0 is the objectness
/// logit, 1 and 2 the box centre's offset in the cell (sigmoid), 3 and 4 the box's width
/// and height as a share of the input (sigmoid), then C class logits (softmax). A box's
/// score is objectness times its class probability.
pub fn grid(
    output: &[f32],
    dims: &[usize],
    classes: usize,
    input: (u32, u32),
    threshold: f32,
) -> Result<Vec<Candidate>, String> {
    let ok = dims.len() == 4 && dims[0] == 1 && dims[1] == 5 + classes;
    if !ok || dims.iter().product::<usize>() != output.len() {
        return Err(format!(
            "the grid head's output is {dims:?}, not [1, {}, H, W]",
            5 + classes
        ));
    }
    let (rows, cols) = (dims[2], dims[3]);
    let plane = rows * cols;
    let (stride_x, stride_y) = (input.0 as f32 / cols as f32, input.1 as f32 / rows as f32);
    let mut probabilities = vec![0.0; classes];
    let mut logits = vec![0.0; classes];
    let mut found = Vec::new();
    for cell in 0..plane {
        let at = |channel: usize| output[channel * plane + cell];
        let objectness = sigmoid(at(0));
        if objectness < threshold {
            continue;
        }
        for (c, l) in logits.iter_mut().enumerate() {
            *l = at(5 + c);
        }
        softmax(&logits, &mut probabilities);
        let (class, probability) = best_class(probabilities.iter().copied());
        let score = objectness * probability;
        if score < threshold {
            continue;
        }
        let (row, col) = (cell / cols, cell % cols);
        let cx = (col as f32 + sigmoid(at(1))) * stride_x;
        let cy = (row as f32 + sigmoid(at(2))) * stride_y;
        let (w, h) = (
            sigmoid(at(3)) * input.0 as f32,
            sigmoid(at(4)) * input.1 as f32,
        );
        found.push(Candidate {
            corners: corners(cx, cy, w, h),
            score,
            class,
        });
    }
    Ok(found)
}

/// YOLOv5-style `[1, boxes, 5 + C]`: centre x, y, width, height in input pixels,
/// objectness, then C class probabilities (the export applies the sigmoid).
pub fn yolov5(
    output: &[f32],
    dims: &[usize],
    classes: usize,
    threshold: f32,
) -> Result<Vec<Candidate>, String> {
    let layout = format!("YOLOv5's [1, boxes, {}]", 5 + classes);
    expect_layout(dims, output.len(), 2, 5 + classes, &layout)?;
    Ok(output
        .chunks_exact(5 + classes)
        .filter_map(|row| {
            let (class, probability) = best_class(row[5..].iter().copied());
            let score = row[4] * probability;
            (score >= threshold).then(|| Candidate {
                corners: corners(row[0], row[1], row[2], row[3]),
                score,
                class,
            })
        })
        .collect())
}

/// YOLOv8-style `[1, 4 + C, boxes]`: per box, centre x, y, width, height in input
/// pixels and C class scores, stored channel-first.
pub fn yolov8(
    output: &[f32],
    dims: &[usize],
    classes: usize,
    threshold: f32,
) -> Result<Vec<Candidate>, String> {
    let layout = format!("YOLOv8's [1, {}, boxes]", 4 + classes);
    expect_layout(dims, output.len(), 1, 4 + classes, &layout)?;
    let boxes = dims[2];
    let at = |channel: usize, b: usize| output[channel * boxes + b];
    Ok((0..boxes)
        .filter_map(|b| {
            let (class, score) = best_class((0..classes).map(|c| at(4 + c, b)));
            (score >= threshold).then(|| Candidate {
                corners: corners(at(0, b), at(1, b), at(2, b), at(3, b)),
                score,
                class,
            })
        })
        .collect())
}

/// Intersection over union of two corner boxes (0 when either is empty).
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// Class-wise non-maximum suppression: highest score first, a box is dropped when it
/// overlaps a kept box of its class by more than `threshold`. Sorted by score.
pub fn nms(mut candidates: Vec<Candidate>, threshold: f32) -> Vec<Candidate> {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Candidate> = Vec::with_capacity(candidates.len().min(64));
    for c in candidates {
        if !kept
            .iter()
            .any(|k| k.class == c.class && iou(&k.corners, &c.corners) > threshold)
        {
            kept.push(c);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logit(p: f32) -> f32 {
        (p / (1.0 - p)).ln()
    }

    #[test]
    fn the_grid_head_decodes_cells_into_input_pixels() {
        // 2 classes on a 2x2 grid over a 100x60 input: one confident cell (row 1, col 0).
        let (rows, cols, classes) = (2, 2, 2);
        let plane = rows * cols;
        let mut out = vec![-10.0; (5 + classes) * plane];
        let cell = 2; // row 1, col 0
        out[cell] = logit(0.9);
        out[plane + cell] = 0.0; // centre at half a cell: x = 25
        out[2 * plane + cell] = 0.0; // y = 30 + 15 = 45
        out[3 * plane + cell] = logit(0.2); // w = 20
        out[4 * plane + cell] = logit(0.5); // h = 30
        out[5 * plane + cell] = 0.0;
        out[6 * plane + cell] = 10.0; // class 1
        let found = grid(&out, &[1, 7, 2, 2], classes, (100, 60), 0.3).unwrap();
        assert_eq!(found.len(), 1);
        let c = found[0];
        assert_eq!(c.class, 1);
        assert!((c.score - 0.9).abs() < 1e-3, "{c:?}");
        let want = [15.0, 30.0, 35.0, 60.0];
        for (got, want) in c.corners.iter().zip(want) {
            assert!((got - want).abs() < 1e-3, "{c:?}");
        }
        assert!(
            grid(&out, &[1, 8, 2, 2], classes, (100, 60), 0.3)
                .unwrap_err()
                .contains("[1, 7, H, W]")
        );
    }

    #[test]
    fn yolov5_rows_and_yolov8_columns_decode_alike() {
        // Two boxes, 2 classes. YOLOv5 rows: cx, cy, w, h, obj, p0, p1.
        let v5 = [
            50.0, 40.0, 20.0, 10.0, 0.9, 0.2, 0.8, /**/ 10.0, 10.0, 4.0, 4.0, 0.1, 0.9, 0.1,
        ];
        let found = yolov5(&v5, &[1, 2, 7], 2, 0.25).unwrap();
        assert_eq!(found.len(), 1, "the second box scores 0.09");
        assert_eq!(found[0].corners, [40.0, 35.0, 60.0, 45.0]);
        assert_eq!(found[0].class, 1);
        assert!((found[0].score - 0.72).abs() < 1e-6);

        // YOLOv8 columns: the same first box with class score 0.9 * 0.8.
        let v8 = [
            50.0,
            10.0,
            40.0,
            10.0,
            20.0,
            4.0,
            10.0,
            4.0,
            0.1,
            0.1,
            0.9 * 0.8,
            0.2,
        ];
        let found8 = yolov8(&v8, &[1, 6, 2], 2, 0.25).unwrap();
        assert_eq!(found8, found);
        assert!(
            yolov8(&v8, &[1, 2, 6], 2, 0.25)
                .unwrap_err()
                .contains("[1, 6, boxes]")
        );
        assert!(yolov5(&v5, &[2, 7], 2, 0.25).is_err());
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes_per_class() {
        let b = |corners, score, class| Candidate {
            corners,
            score,
            class,
        };
        let kept = nms(
            vec![
                b([0.0, 0.0, 10.0, 10.0], 0.6, 0),
                b([1.0, 1.0, 11.0, 11.0], 0.9, 0), // overlaps the first by 0.68: wins
                b([1.0, 1.0, 11.0, 11.0], 0.5, 1), // another class: kept
                b([20.0, 20.0, 30.0, 30.0], 0.4, 0), // apart: kept
            ],
            0.45,
        );
        let scores: Vec<f32> = kept.iter().map(|c| c.score).collect();
        assert_eq!(scores, vec![0.9, 0.5, 0.4]);
        assert!((iou(&[0.0, 0.0, 10.0, 10.0], &[5.0, 0.0, 15.0, 10.0]) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(iou(&[0.0, 0.0, 0.0, 0.0], &[0.0, 0.0, 0.0, 0.0]), 0.0);
    }
}
