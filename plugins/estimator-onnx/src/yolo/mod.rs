//! The detection losses of Ultralytics' YOLO heads, on the outputs their exports give,
//! written here and handed to the host as gradients of those outputs: the anchor-free
//! YOLOv8 head ([`v8`]; also YOLO11 and YOLOv5nu) and the classic anchor-based YOLOv5 head
//! ([`v5`]). What they share: the levels' strides, the complete IoU and binary
//! cross-entropy on scores the export has already put through their sigmoid.

pub mod v5;
pub mod v8;

/// The strides of the three detection levels, in the order an export lays them out.
pub const STRIDES: [u32; 3] = [8, 16, 32];
const EPS: f64 = 1e-9;

/// Per sample, its objects: corners in input pixels and a class index.
pub type Boxes = [Vec<([f32; 4], u32)>];

/// Complete IoU of two boxes given as corners.
pub fn ciou(a: [f64; 4], b: [f64; 4]) -> f64 {
    let (w1, h1) = (a[2] - a[0], a[3] - a[1] + EPS);
    let (w2, h2) = (b[2] - b[0], b[3] - b[1] + EPS);
    let inter =
        (a[2].min(b[2]) - a[0].max(b[0])).max(0.0) * (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let union = w1 * h1 + w2 * h2 - inter + EPS;
    let iou = inter / union;
    let cw = a[2].max(b[2]) - a[0].min(b[0]);
    let ch = a[3].max(b[3]) - a[1].min(b[1]);
    let diagonal = cw * cw + ch * ch + EPS;
    let dx = b[0] + b[2] - a[0] - a[2];
    let dy = b[1] + b[3] - a[1] - a[3];
    let centres = (dx * dx + dy * dy) / 4.0;
    let v = (4.0 / (std::f64::consts::PI * std::f64::consts::PI))
        * ((w2 / h2).atan() - (w1 / h1).atan()).powi(2);
    let alpha = v / (v - iou + (1.0 + EPS));
    iou - (centres / diagonal + v * alpha)
}

fn corners(cx: f64, cy: f64, w: f64, h: f64) -> [f64; 4] {
    [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
}

/// `1 - CIoU` of a predicted box (centre x, y, width, height) against `truth` (corners),
/// and its gradient with respect to the four values (central differences).
fn box_loss(values: [f32; 4], truth: [f64; 4]) -> (f64, [f64; 4]) {
    let values = values.map(f64::from);
    let loss = |v: &[f64; 4]| 1.0 - ciou(corners(v[0], v[1], v[2], v[3]), truth);
    let slopes = std::array::from_fn(|c| {
        let (mut plus, mut minus) = (values, values);
        plus[c] += 1e-3;
        minus[c] -= 1e-3;
        (loss(&plus) - loss(&minus)) / 2e-3
    });
    (loss(&values), slopes)
}

/// Binary cross-entropy of a probability `p` (a score after its sigmoid) against `target`,
/// and its derivative with respect to `p` (through the graph's sigmoid it becomes
/// `p - target`, as BCE on the logits gives).
fn bce(p: f32, target: f64) -> (f64, f64) {
    let p = (p as f64).clamp(1e-7, 1.0 - 1e-7);
    (
        -(target * p.ln() + (1.0 - target) * (1.0 - p).ln()),
        (p - target) / (p * (1.0 - p)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ciou_is_one_for_the_same_box_and_falls_with_distance() {
        let b = [10.0, 10.0, 30.0, 20.0];
        assert!((ciou(b, b) - 1.0).abs() < 1e-6);
        assert!(ciou(b, [12.0, 10.0, 32.0, 20.0]) > ciou(b, [20.0, 10.0, 40.0, 20.0]));
        assert!(ciou(b, [50.0, 50.0, 60.0, 60.0]) < 0.0, "apart: penalised");
    }

    #[test]
    fn bce_and_its_slope_agree() {
        for (p, t) in [(0.3f32, 0.0), (0.8, 1.0), (0.5, 0.7)] {
            let (_, slope) = bce(p, t);
            let h = 1e-3;
            let numeric = (bce(p + h, t).0 - bce(p - h, t).0) / (2.0 * h as f64);
            assert!(
                (numeric - slope).abs() < 1e-3 * slope.abs().max(1.0),
                "{p} {t}"
            );
        }
    }
}
