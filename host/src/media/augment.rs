//! Training-time augmentation of frames, natively: a horizontal flip, HSV jitter and a
//! random scale and translation (the kinds Ultralytics applies), with the linear map that
//! moves a label's boxes along. The same seed gives the same frame.

use rayon::prelude::*;

use super::Frame;

/// What may change, and how much.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Augmentation {
    /// The probability of a horizontal flip.
    pub flip: f32,
    /// HSV gains: hue turns by up to `hue` of a full turn; saturation and value scale by
    /// up to `1 ± saturation` and `1 ± value`.
    pub hue: f32,
    pub saturation: f32,
    pub value: f32,
    /// Zoom by a factor in `[1 - scale, 1 + scale]` about the centre.
    pub scale: f32,
    /// Shift by up to `translate` of the width and of the height.
    pub translate: f32,
    pub seed: u64,
}

/// Where a source point lands in the augmented frame: `(x * scale_x + shift_x, y *
/// scale_y + shift_y)`, in pixel-edge coordinates; a negative `scale_x` is a flip.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Motion {
    pub scale_x: f32,
    pub scale_y: f32,
    pub shift_x: f32,
    pub shift_y: f32,
}

/// The grey Ultralytics pads with.
const PAD: u8 = 114;

struct Random(u64);

impl Random {
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [-1, 1).
    fn signed(&mut self) -> f32 {
        self.unit() * 2.0 - 1.0
    }
}

impl Frame {
    /// A changed copy of the frame (same size) and where its pixels moved.
    pub fn augmented(&self, spec: &Augmentation) -> (Frame, Motion) {
        let mut r = Random(spec.seed ^ 0xA46_0E57);
        let (w, h) = (self.width() as f32, self.height() as f32);
        let flip = r.unit() < spec.flip;
        let s = 1.0 + r.signed() * spec.scale.clamp(0.0, 0.9);
        let (tx, ty) = (
            r.signed() * spec.translate * w,
            r.signed() * spec.translate * h,
        );
        let sx = if flip { -s } else { s };
        let motion = Motion {
            scale_x: sx,
            scale_y: s,
            shift_x: w / 2.0 - sx * w / 2.0 + tx,
            shift_y: h / 2.0 - s * h / 2.0 + ty,
        };
        let gains = [
            r.signed() * spec.hue,
            1.0 + r.signed() * spec.saturation,
            1.0 + r.signed() * spec.value,
        ];
        let (width, height) = (self.width() as usize, self.height() as usize);
        let source = self.pixels().as_raw();
        // Bilinear, pixel centres at i + 0.5; outside the source: the pad grey. Written
        // over the raw bytes without calls to libm, rows in parallel on the background
        // threads: a frame is made once per image per epoch, between training steps.
        let texel = |px: isize, py: isize| -> [f32; 3] {
            if px < 0 || py < 0 || px >= width as isize || py >= height as isize {
                return [PAD as f32; 3];
            }
            let at = (py as usize * width + px as usize) * 3;
            [
                source[at] as f32,
                source[at + 1] as f32,
                source[at + 2] as f32,
            ]
        };
        let mut pixels = vec![0u8; width * height * 3];
        let rows = pixels.par_chunks_mut(width * 3).enumerate();
        crate::threads::background().install(|| {
            rows.for_each(|(py, row)| {
                let fy = (py as f32 + 0.5 - motion.shift_y) / motion.scale_y - 0.5;
                let y0 = floor(fy);
                let ay = fy - y0 as f32;
                for (px, pixel) in row.chunks_mut(3).enumerate() {
                    let fx = (px as f32 + 0.5 - motion.shift_x) / motion.scale_x - 0.5;
                    let x0 = floor(fx);
                    let ax = fx - x0 as f32;
                    let (a, b) = (texel(x0, y0), texel(x0 + 1, y0));
                    let (c, d) = (texel(x0, y0 + 1), texel(x0 + 1, y0 + 1));
                    let mut rgb = [0.0; 3];
                    for k in 0..3 {
                        let top = a[k] + (b[k] - a[k]) * ax;
                        let bottom = c[k] + (d[k] - c[k]) * ax;
                        rgb[k] = top + (bottom - top) * ay;
                    }
                    let rgb = jitter(rgb, gains);
                    for (out, value) in pixel.iter_mut().zip(rgb) {
                        *out = (value.clamp(0.0, 255.0) + 0.5) as u8;
                    }
                }
            })
        });
        let image = image::RgbImage::from_raw(width as u32, height as u32, pixels)
            .expect("the buffer is the image's size");
        (
            Frame::from_image(&format!("{}+augmented", self.name()), image),
            motion,
        )
    }
}

/// The largest whole number not above `v`, without a call to libm.
fn floor(v: f32) -> isize {
    let t = v as isize;
    if (t as f32) > v { t - 1 } else { t }
}

/// `v` modulo `m` in `[0, m)` for `v` within a few `m` of the range.
fn wrap(mut v: f32, m: f32) -> f32 {
    while v < 0.0 {
        v += m;
    }
    while v >= m {
        v -= m;
    }
    v
}

/// Turns the hue by `gains[0]` of a turn and scales saturation and value.
fn jitter([r, g, b]: [f32; 3], gains: [f32; 3]) -> [f32; 3] {
    if gains == [0.0, 1.0, 1.0] {
        return [r, g, b];
    }
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let delta = max - min;
    let mut hue = if delta == 0.0 {
        0.0
    } else if max == r {
        wrap((g - b) / delta, 6.0)
    } else if max == g {
        (b - r) / delta + 2.0
    } else {
        (r - g) / delta + 4.0
    } / 6.0;
    let saturation = if max == 0.0 { 0.0 } else { delta / max };
    hue = wrap(hue + gains[0], 1.0);
    let saturation = (saturation * gains[1]).clamp(0.0, 1.0);
    let value = (max * gains[2]).clamp(0.0, 255.0);
    let chroma = value * saturation;
    let h = hue * 6.0;
    let x = chroma * (1.0 - (wrap(h, 2.0) - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (chroma, x, 0.0),
        1 => (x, chroma, 0.0),
        2 => (0.0, chroma, x),
        3 => (0.0, x, chroma),
        4 => (x, 0.0, chroma),
        _ => (chroma, 0.0, x),
    };
    let m = value - chroma;
    [r + m, g + m, b + m]
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: Augmentation = Augmentation {
        flip: 0.0,
        hue: 0.0,
        saturation: 0.0,
        value: 0.0,
        scale: 0.0,
        translate: 0.0,
        seed: 1,
    };

    /// A 20x10 frame, black but for a red 4x4 square at (2, 3).
    fn frame() -> Frame {
        let mut pixels = vec![0u8; 20 * 10 * 3];
        for y in 3..7 {
            for x in 2..6 {
                pixels[(y * 20 + x) * 3] = 200;
            }
        }
        Frame::from_rgb("f", 20, 10, pixels).unwrap()
    }

    fn red_at(frame: &Frame, x: u32, y: u32) -> bool {
        frame.pixels().get_pixel(x, y).0[0] > 150
    }

    #[test]
    fn nothing_asked_changes_nothing() {
        let (out, motion) = frame().augmented(&NONE);
        assert_eq!(out.pixels(), frame().pixels());
        assert_eq!(
            motion,
            Motion {
                scale_x: 1.0,
                scale_y: 1.0,
                shift_x: 0.0,
                shift_y: 0.0
            }
        );
    }

    #[test]
    fn a_flip_moves_the_pixels_and_the_boxes_alike() {
        let (out, m) = frame().augmented(&Augmentation { flip: 1.0, ..NONE });
        let (x1, x2) = (2.0 * m.scale_x + m.shift_x, 6.0 * m.scale_x + m.shift_x);
        assert_eq!((x2, x1), (14.0, 18.0), "the square's box, mirrored");
        assert!(red_at(&out, 14, 3) && red_at(&out, 17, 6) && !red_at(&out, 2, 3));
    }

    #[test]
    fn scale_and_translation_keep_boxes_on_their_objects() {
        for seed in 0..20 {
            let (out, m) = frame().augmented(&Augmentation {
                scale: 0.5,
                translate: 0.2,
                seed,
                ..NONE
            });
            let centre = |x: f32, y: f32| (x * m.scale_x + m.shift_x, y * m.scale_y + m.shift_y);
            let (cx, cy) = centre(4.0, 5.0);
            if cx >= 0.0 && cy >= 0.0 && cx < 20.0 && cy < 10.0 {
                assert!(red_at(&out, cx as u32, cy as u32), "seed {seed}: {m:?}");
            }
        }
        let a = frame().augmented(&Augmentation {
            scale: 0.5,
            seed: 3,
            ..NONE
        });
        assert_eq!(
            a.0.pixels(),
            frame()
                .augmented(&Augmentation {
                    scale: 0.5,
                    seed: 3,
                    ..NONE
                })
                .0
                .pixels()
        );
    }

    #[test]
    fn hsv_jitter_keeps_grey_grey_and_turns_hue() {
        assert_eq!(
            jitter([100.0, 100.0, 100.0], [0.3, 1.5, 1.0]),
            [100.0, 100.0, 100.0]
        );
        let turned = jitter([200.0, 0.0, 0.0], [1.0 / 3.0, 1.0, 1.0]);
        assert!(
            turned[1] > 190.0 && turned[0] < 10.0,
            "red turns green: {turned:?}"
        );
        let darker = jitter([200.0, 100.0, 50.0], [0.0, 1.0, 0.5]);
        assert!((darker[0] - 100.0).abs() < 1e-3, "{darker:?}");
    }
}
