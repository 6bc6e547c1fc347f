//! MP4 (H.264) video at the example's size (640x352): encode and decode rates, and the
//! decode's share of a frame's budget at 25 frames/s. Prints medians of 5 runs over 250
//! frames of moving boxes on a gradient with per-pixel sensor noise.
//!
//! `cargo bench -p sedna --bench video`

use std::time::Instant;

use image::RgbImage;
use sedna::media::{VideoReader, VideoWriter};

const FRAMES: u32 = 250;
const RUNS: usize = 5;

/// A frame: a gradient with noise, and three boxes moving across it.
fn frame(i: u32) -> RgbImage {
    RgbImage::from_fn(640, 352, |x, y| {
        let moving = (0..3).any(|k| {
            let left = (i * (3 + k) * 4 + k * 200) % 640;
            x >= left && x < left + 48 && y >= 100 + k * 60 && y < 180 + k * 60
        });
        if moving {
            image::Rgb([250, 200, 30])
        } else {
            // Sensor noise: a hash of the pixel and the frame, +-4 levels.
            let mut h = (x as u64) << 40 | (y as u64) << 20 | u64::from(i);
            h = (h ^ (h >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
            let noise = (h >> 61) as u8;
            image::Rgb([(x / 3) as u8 + noise, (y / 2) as u8 + noise, 120 + noise])
        }
    })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.mp4");
    let frames: Vec<RgbImage> = (0..FRAMES).map(frame).collect();
    let (mut encode, mut decode) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let started = Instant::now();
        let mut writer = VideoWriter::create(&path, 640, 352, 25).unwrap();
        for f in &frames {
            writer.write(f).unwrap();
        }
        writer.finish().unwrap();
        encode.push(f64::from(FRAMES) / started.elapsed().as_secs_f64());

        let started = Instant::now();
        let decoded = VideoReader::open(&path)
            .unwrap()
            .map(Result::unwrap)
            .count();
        assert_eq!(decoded, FRAMES as usize);
        decode.push(f64::from(FRAMES) / started.elapsed().as_secs_f64());
    }
    let size = std::fs::metadata(&path).unwrap().len();
    let (encode, decode) = (median(&mut encode), median(&mut decode));
    println!(
        "video 640x352, {FRAMES} frames, {} KiB, median of {RUNS} runs",
        size / 1024
    );
    println!("  encode: {encode:.0} frames/s");
    println!(
        "  decode: {decode:.0} frames/s ({:.2} ms a frame, {:.1}% of a 25 fps frame's 40 ms)",
        1000.0 / decode,
        100.0 * 25.0 / decode
    );
}
