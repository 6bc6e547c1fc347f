//! A deterministic building-site scene generator: workers (with or without a helmet) and
//! loose helmets on a site background, with their boxes in Sedna's four classes. The same
//! look and seed give the same bytes on every machine (integer-only pixel arithmetic, one
//! seeded generator).
//!
//! Two looks: `Base`, what the base model learns from, and `Shifted`, what the edge camera
//! streams later: dusk light and helmets in colours the base model never saw.

use image::{Rgb, RgbImage};

pub const WIDTH: u32 = 640;
pub const HEIGHT: u32 = 352;
/// Sedna's helmet-detection classes, in output order.
pub const CLASSES: [&str; 4] = ["person", "helmet", "helmet-on", "helmet-off"];
pub const PERSON: usize = 0;
pub const HELMET: usize = 1;
pub const HELMET_ON: usize = 2;
pub const HELMET_OFF: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Look {
    Base,
    Shifted,
}

impl Look {
    pub fn name(self) -> &'static str {
        match self {
            Look::Base => "base",
            Look::Shifted => "shifted",
        }
    }

    fn helmet_colours(self) -> &'static [[u8; 3]] {
        match self {
            Look::Base => &[[250, 205, 20], [240, 240, 232]],
            Look::Shifted => &[[35, 90, 215], [205, 35, 35]],
        }
    }

    /// Per-channel light, in 1/256ths: daylight, or a dimmer, bluer dusk.
    fn light(self) -> [u32; 3] {
        match self {
            Look::Base => [256, 256, 256],
            Look::Shifted => [236, 236, 248],
        }
    }

    /// Streams of the two looks never share a seed.
    fn salt(self) -> u64 {
        match self {
            Look::Base => 0x5eed_ba5e,
            Look::Shifted => 0x5eed_d05c,
        }
    }
}

/// An object in the scene: its box `[x1, y1, x2, y2]` in pixels and its class.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    pub corners: [f32; 4],
    pub class: usize,
}

pub struct Scene {
    pub image: RgbImage,
    pub objects: Vec<Object>,
}

/// SplitMix64: small, fast and the same everywhere.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A whole number in `lo..=hi`.
    fn int(&mut self, lo: i32, hi: i32) -> i32 {
        lo + (self.next() % (hi - lo + 1) as u64) as i32
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// Paints with clipping; sizes are in whole pixels.
struct Canvas {
    image: RgbImage,
}

impl Canvas {
    fn rect(&mut self, x1: i32, y1: i32, x2: i32, y2: i32, colour: [u8; 3]) {
        for y in y1.max(0)..y2.min(HEIGHT as i32) {
            for x in x1.max(0)..x2.min(WIDTH as i32) {
                self.image.put_pixel(x as u32, y as u32, Rgb(colour));
            }
        }
    }

    /// The ellipse centred at (cx, cy) with radii (rx, ry); `upper` keeps only its top half.
    fn ellipse(&mut self, cx: i32, cy: i32, rx: i32, ry: i32, upper: bool, colour: [u8; 3]) {
        let bottom = if upper { cy } else { cy + ry };
        for y in (cy - ry).max(0)..=bottom.min(HEIGHT as i32 - 1) {
            for x in (cx - rx).max(0)..=(cx + rx).min(WIDTH as i32 - 1) {
                let (dx, dy) = ((x - cx) as i64, (y - cy) as i64);
                let (rx, ry) = (rx.max(1) as i64, ry.max(1) as i64);
                if dx * dx * ry * ry + dy * dy * rx * rx <= rx * rx * ry * ry {
                    self.image.put_pixel(x as u32, y as u32, Rgb(colour));
                }
            }
        }
    }
}

const SKIN: [[u8; 3]; 4] = [
    [232, 192, 160],
    [204, 152, 112],
    [152, 102, 72],
    [112, 76, 52],
];
const HAIR: [[u8; 3]; 3] = [[40, 30, 22], [92, 62, 32], [150, 140, 130]];
const VESTS: [[u8; 3]; 2] = [[255, 122, 24], [196, 228, 44]];
const TROUSERS: [[u8; 3]; 3] = [[40, 46, 72], [62, 62, 62], [54, 42, 30]];
const STRUCTURES: [[u8; 3]; 4] = [
    [92, 100, 110],
    [140, 84, 64],
    [72, 108, 138],
    [176, 176, 168],
];
const GROUNDS: [[u8; 3]; 3] = [[122, 110, 94], [136, 124, 104], [110, 114, 100]];

/// The scene `seed` of `look`.
pub fn render(look: Look, seed: u64) -> Scene {
    let mut rng = Rng::new(seed ^ look.salt());
    let mut canvas = Canvas {
        image: RgbImage::new(WIDTH, HEIGHT),
    };
    let horizon = rng.int(60, 95);
    let ground = rng.pick(&GROUNDS);
    for y in 0..HEIGHT as i32 {
        let colour = if y < horizon {
            let t = (y * 256 / horizon) as u32;
            [
                (150 + 50 * t / 256) as u8,
                (190 + 30 * t / 256) as u8,
                (232 + 3 * t / 256) as u8,
            ]
        } else {
            let shade = ((y - horizon) * 30 / (HEIGHT as i32 - horizon)) as u8;
            ground.map(|c| c.saturating_sub(shade))
        };
        canvas.rect(0, y, WIDTH as i32, y + 1, colour);
    }
    for _ in 0..rng.int(2, 4) {
        let (x, w) = (rng.int(-40, WIDTH as i32), rng.int(60, 180));
        let (top, bottom) = (rng.int(20, horizon - 10), horizon + rng.int(5, 30));
        canvas.rect(x, top, x + w, bottom, rng.pick(&STRUCTURES));
    }

    let mut objects = Vec::new();
    // Workers stand in slots across the frame, nearer (lower, larger) or farther.
    let mut slots: Vec<i32> = (0..6).map(|i| 50 + i * 108).collect();
    let workers = rng.int(1, 4) as usize;
    for _ in 0..workers {
        let slot = slots.remove((rng.next() % slots.len() as u64) as usize);
        let x = slot + rng.int(-18, 18);
        let scale = rng.int(120, 155); // percent
        let feet = rng.int(horizon + 150 * scale / 100, HEIGHT as i32 - 4);
        worker(&mut canvas, &mut rng, look, x, feet, scale, &mut objects);
    }
    for _ in 0..rng.int(0, 2) {
        if slots.is_empty() {
            break;
        }
        let slot = slots.remove((rng.next() % slots.len() as u64) as usize);
        let (x, y) = (
            slot + rng.int(-20, 20),
            rng.int(horizon + 40, HEIGHT as i32 - 8),
        );
        let colour = rng.pick(look.helmet_colours());
        canvas.ellipse(x, y, 15, 12, true, colour);
        canvas.rect(x - 19, y, x + 19, y + 3, colour);
        objects.push(Object {
            corners: [
                x as f32 - 19.0,
                y as f32 - 12.0,
                x as f32 + 19.0,
                y as f32 + 3.0,
            ],
            class: HELMET,
        });
    }

    finish(&mut canvas.image, &mut rng, look);
    Scene {
        image: canvas.image,
        objects,
    }
}

/// Draws one worker whose feet are at (x, feet), `scale` percent of the usual size, and
/// records the person and the head (helmet on or off).
fn worker(
    canvas: &mut Canvas,
    rng: &mut Rng,
    look: Look,
    x: i32,
    feet: i32,
    scale: i32,
    objects: &mut Vec<Object>,
) {
    let s = |v: i32| v * scale / 100;
    let top = feet - s(130);
    let r = s(11);
    let (vest, trousers, skin) = (rng.pick(&VESTS), rng.pick(&TROUSERS), rng.pick(&SKIN));
    let torso = (top + 2 * r + s(2), top + 2 * r + s(52));
    // Legs, arms, torso, then the head on top.
    canvas.rect(x - s(15), torso.1, x - s(3), feet, trousers);
    canvas.rect(x + s(3), torso.1, x + s(15), feet, trousers);
    canvas.rect(x - s(26), torso.0 + s(4), x - s(18), torso.1 - s(6), vest);
    canvas.rect(x + s(18), torso.0 + s(4), x + s(26), torso.1 - s(6), vest);
    canvas.rect(x - s(18), torso.0, x + s(18), torso.1, vest);
    canvas.rect(x - s(4), top + 2 * r - s(2), x + s(4), torso.0, skin);
    canvas.ellipse(x, top + r, r, r, false, skin);
    let helmet = rng.chance(60);
    let head_top = if helmet {
        let colour = rng.pick(look.helmet_colours());
        let (rx, ry) = (r + s(3), r + s(1));
        canvas.ellipse(x, top + r - s(1), rx, ry, true, colour);
        canvas.rect(
            x - rx - s(3),
            top + r - s(1),
            x + rx + s(3),
            top + r + s(2),
            colour,
        );
        top - s(2)
    } else {
        canvas.ellipse(x, top + r - s(2), r + 1, s(8), true, rng.pick(&HAIR));
        top
    };
    let head_half = if helmet { r + s(6) } else { r + 1 };
    objects.push(Object {
        corners: [
            (x - head_half) as f32,
            head_top as f32,
            (x + head_half) as f32,
            (top + 2 * r) as f32,
        ],
        class: if helmet { HELMET_ON } else { HELMET_OFF },
    });
    objects.push(Object {
        corners: [
            (x - s(26)) as f32,
            head_top as f32,
            (x + s(26)) as f32,
            feet as f32,
        ],
        class: PERSON,
    });
}

/// The light of the look, and a little sensor noise.
fn finish(image: &mut RgbImage, rng: &mut Rng, look: Look) {
    let light = look.light();
    let mut noise = rng.next();
    for pixel in image.pixels_mut() {
        noise = noise
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let jitter = ((noise >> 59) as i32) - 16; // -16..=15
        for (c, value) in pixel.0.iter_mut().enumerate() {
            let lit = (*value as u32 * light[c] / 256) as i32 + jitter / 3;
            *value = lit.clamp(0, 255) as u8;
        }
    }
}

/// A Sedna data index line for `objects`: `path x1,y1,x2,y2,class ...`, the class as
/// its index in [`CLASSES`].
pub fn index_line(path: &str, objects: &[Object]) -> String {
    let mut line = path.to_string();
    for o in objects {
        let [x1, y1, x2, y2] = o.corners.map(|v| v.round() as i32);
        line.push_str(&format!(" {x1},{y1},{x2},{y2},{}", o.class));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_bytes_and_another_seed_another_scene() {
        let a = render(Look::Base, 7);
        let b = render(Look::Base, 7);
        assert_eq!(a.image.as_raw(), b.image.as_raw());
        assert_eq!(a.objects, b.objects);
        assert_ne!(render(Look::Base, 8).image.as_raw(), a.image.as_raw());
        assert_ne!(render(Look::Shifted, 7).image.as_raw(), a.image.as_raw());
    }

    #[test]
    fn every_worker_has_a_person_box_and_a_head_box_inside_the_frame() {
        for seed in 0..50 {
            let scene = render(Look::Shifted, seed);
            let people = scene.objects.iter().filter(|o| o.class == PERSON).count();
            let heads = scene
                .objects
                .iter()
                .filter(|o| o.class == HELMET_ON || o.class == HELMET_OFF)
                .count();
            assert!(people >= 1 && people == heads, "seed {seed}");
            for o in &scene.objects {
                let [x1, y1, x2, y2] = o.corners;
                assert!(x1 < x2 && y1 < y2, "seed {seed}: {o:?}");
                assert!(y1 >= 0.0 && y2 <= HEIGHT as f32, "seed {seed}: {o:?}");
            }
        }
    }
}
