//! Hard examples kept for people to label: the frame as it came, a small preview with the
//! boxes drawn, and one [`HardExampleRecord`] per example in `index.jsonl` with the
//! prediction as a pre-label.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::results::json_line;
use super::upload::{HardExampleUpload, UploadStats};
use crate::files::write_atomically;
use crate::media::Frame;
use crate::plugin::Prediction;
use crate::plugin::json::prediction_to_json;

/// The store's index: one [`HardExampleRecord`] a line.
pub const INDEX: &str = "index.jsonl";

/// One line of a store's [`INDEX`]: what `sedna label export` reads back. The fields are
/// in alphabetical order, as the index has always written its keys; a line without one
/// reads as empty (and is skipped when its image is not there).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HardExampleRecord {
    #[serde(default)]
    pub height: u32,
    /// The image's file name, in the store's directory.
    #[serde(default)]
    pub image: String,
    /// The prediction as JSON ([`crate::plugin::json`]): the pre-label.
    #[serde(default)]
    pub prediction: serde_json::Value,
    #[serde(default)]
    pub width: u32,
}

/// Hard examples on disk: `<name>.png` (the frame as it came, not drawn on: a frame read
/// from a PNG or JPEG file keeps its file's bytes and extension), for detections a small
/// `<name>.preview.jpg` with the boxes drawn, and one JSON line per example in
/// `index.jsonl` with the prediction as a pre-label. Bounded: past `capacity` examples,
/// the oldest images are deleted.
///
/// Writing happens on a thread of its own, so a frame does not wait for the disk or the
/// encoder; at most [`KEEP_QUEUE`] examples wait, and past that the frame path waits
/// (nothing is dropped). Dropping the store writes what is queued.
pub struct HardExampleStore {
    disk: Arc<KeptOnDisk>,
    queue: Option<std::sync::mpsc::SyncSender<Keep>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Copies what is kept to object storage (`HE_SAVED_URL` = `s3://`); dropped after
    /// the writer, so its last pass sees every example.
    upload: Option<HardExampleUpload>,
}

/// Hard examples waiting to be written, at most.
pub const KEEP_QUEUE: usize = 4;

struct Keep {
    name: String,
    frame: Arc<Frame>,
    prediction: Prediction,
}

/// The store's directory, what it holds, and how many examples are still queued.
struct KeptOnDisk {
    dir: PathBuf,
    capacity: usize,
    kept: std::sync::Mutex<std::collections::VecDeque<PathBuf>>,
    queued: std::sync::Mutex<usize>,
    written: std::sync::Condvar,
}

impl HardExampleStore {
    pub fn open(dir: &Path, capacity: usize) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut existing: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_example(p))
            .collect();
        existing.sort();
        let disk = Arc::new(KeptOnDisk {
            dir: dir.to_path_buf(),
            capacity: capacity.max(1),
            kept: std::sync::Mutex::new(existing.into()),
            queued: std::sync::Mutex::new(0),
            written: std::sync::Condvar::new(),
        });
        let (queue, waiting) = std::sync::mpsc::sync_channel::<Keep>(KEEP_QUEUE);
        let writer = std::thread::Builder::new()
            .name("hard-examples".into())
            .spawn({
                let disk = disk.clone();
                move || {
                    for keep in waiting {
                        if let Err(e) = disk.save(&keep) {
                            tracing::warn!("cannot keep hard example {}: {e:#}", keep.name);
                        }
                        *disk.queued.lock().unwrap() -= 1;
                        disk.written.notify_all();
                    }
                }
            })?;
        Ok(HardExampleStore {
            disk,
            queue: Some(queue),
            writer: Some(writer),
            upload: None,
        })
    }

    /// The store, its examples uploaded by `upload` as they are kept.
    pub fn with_upload(mut self, upload: HardExampleUpload) -> Self {
        self.upload = Some(upload);
        self
    }

    /// What the upload has done, when there is one.
    pub fn upload_stats(&self) -> Option<UploadStats> {
        self.upload.as_ref().map(HardExampleUpload::stats)
    }

    pub fn dir(&self) -> &Path {
        &self.disk.dir
    }

    /// Queues the frame to be kept (waits while [`KEEP_QUEUE`] examples wait already).
    pub(super) fn save(&self, name: &str, frame: &Arc<Frame>, prediction: &Prediction) {
        *self.disk.queued.lock().unwrap() += 1;
        let keep = Keep {
            name: name.to_string(),
            frame: frame.clone(),
            prediction: prediction.clone(),
        };
        if let Some(queue) = &self.queue
            && queue.send(keep).is_err()
        {
            *self.disk.queued.lock().unwrap() -= 1;
            tracing::warn!("cannot keep hard example {name}: the writer has stopped");
        }
    }

    /// Waits until every queued example is written.
    pub fn flush(&self) {
        let mut queued = self.disk.queued.lock().unwrap();
        while *queued > 0 {
            queued = self.disk.written.wait(queued).unwrap();
        }
    }

    /// The images kept now (after the queued ones are written).
    pub fn images(&self) -> Vec<PathBuf> {
        self.flush();
        self.disk.kept.lock().unwrap().iter().cloned().collect()
    }
}

impl Drop for HardExampleStore {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// A kept frame's image (not its preview, not the index): a `.png`, or a `.jpg` kept as
/// its source file had it.
pub fn is_example(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    !name.ends_with(".preview.jpg") && (name.ends_with(".png") || name.ends_with(".jpg"))
}

impl KeptOnDisk {
    fn save(&self, keep: &Keep) -> anyhow::Result<()> {
        let Keep {
            name,
            frame,
            prediction,
        } = keep;
        let stem: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let image = match frame.encoded() {
            // The file's own bytes: nothing re-encoded, nothing lost.
            Some((bytes, extension)) => {
                let image = self.dir.join(format!("{stem}.{extension}"));
                write_atomically(&image, bytes)?;
                image
            }
            None => {
                let image = self.dir.join(format!("{stem}.png"));
                write_atomically(&image, &png(frame)?)?;
                image
            }
        };
        if let Prediction::Detections(found) = prediction {
            let small = preview(frame, found);
            let mut encoded = Vec::new();
            jpeg_encoder::Encoder::new(&mut encoded, PREVIEW_QUALITY).encode(
                small.as_raw(),
                u16::try_from(small.width())?,
                u16::try_from(small.height())?,
                jpeg_encoder::ColorType::Rgb,
            )?;
            write_atomically(&preview_path(&image), &encoded)?;
        }
        let record = HardExampleRecord {
            height: frame.height(),
            image: image
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            prediction: prediction_to_json(prediction),
            width: frame.width(),
        };
        use std::io::Write as _;
        let mut index = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(INDEX))?;
        index.write_all(&json_line(&record))?;
        let mut kept = self.kept.lock().unwrap();
        kept.push_back(image);
        while kept.len() > self.capacity {
            if let Some(oldest) = kept.pop_front() {
                let _ = std::fs::remove_file(preview_path(&oldest));
                let _ = std::fs::remove_file(oldest);
            }
        }
        Ok(())
    }
}

/// A frame as PNG, compressed fast (a hard example is written once and read rarely).
fn png(frame: &Frame) -> anyhow::Result<Vec<u8>> {
    use image::ImageEncoder as _;
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let mut bytes = Vec::new();
    PngEncoder::new_with_quality(&mut bytes, CompressionType::Fast, FilterType::Adaptive)
        .write_image(
            frame.pixels().as_raw(),
            frame.width(),
            frame.height(),
            image::ExtendedColorType::Rgb8,
        )?;
    Ok(bytes)
}

/// Width of a hard example's preview image.
const PREVIEW_WIDTH: u32 = 320;

fn preview_path(image: &Path) -> PathBuf {
    image.with_extension("preview.jpg")
}

/// `sum / count` for a sum of `count` bytes, as a multiplication: a division per value
/// was 40% of keeping a hard example. Exact for every such sum while `count` < 4096.
fn byte_mean(count: u32) -> impl Fn(u32) -> u8 {
    let reciprocal = (1u64 << 32).div_ceil(u64::from(count.max(1)));
    let exact = count < 4096;
    move |sum| {
        if exact {
            ((u64::from(sum) * reciprocal) >> 32) as u8
        } else {
            (sum / count) as u8
        }
    }
}

/// JPEG quality of a preview.
const PREVIEW_QUALITY: u8 = 75;

/// A small copy of the frame with its boxes drawn, for a person to glance at: the frame
/// shrunk by a whole factor, each preview pixel the mean of a square of frame pixels, in
/// integers and row by row (a hard example is kept off the frame path, but on the same
/// cores).
fn preview(frame: &Frame, found: &crate::plugin::Detections) -> image::RgbImage {
    let factor = frame.width().div_ceil(PREVIEW_WIDTH).max(1);
    let scale = 1.0 / factor as f32;
    let (w, h) = (
        (frame.width() / factor).max(1),
        (frame.height() / factor).max(1),
    );
    let (f, stride) = (factor as usize, frame.width() as usize * 3);
    let mean = byte_mean((f * f) as u32);
    let source = frame.pixels().as_raw();
    // Per preview row: the square's source rows summed column by column (a loop the
    // compiler vectorises), then each square's columns.
    let mut columns = vec![0u32; w as usize * f * 3];
    let mut pixels = Vec::with_capacity(w as usize * h as usize * 3);
    for y in 0..h as usize {
        columns.fill(0);
        for sy in (y * f..(y + 1) * f).map(|sy| sy.min(frame.height() as usize - 1)) {
            let row = &source[sy * stride..][..columns.len()];
            for (sum, &byte) in columns.iter_mut().zip(row) {
                *sum += u32::from(byte);
            }
        }
        for square in columns.chunks_exact(f * 3) {
            let mut sum = [0u32; 3];
            for p in square.chunks_exact(3) {
                sum[0] += p[0];
                sum[1] += p[1];
                sum[2] += p[2];
            }
            pixels.extend(sum.map(&mean));
        }
    }
    let mut small = image::RgbImage::from_raw(w, h, pixels).expect("w x h x 3 bytes");
    let red = image::Rgb([255, 32, 32]);
    for ([x1, y1, x2, y2], _, _) in found.rows() {
        let clamp = |v: f32, max: u32| ((v * scale).max(0.0) as u32).min(max - 1);
        let (x1, x2, y1, y2) = (clamp(x1, w), clamp(x2, w), clamp(y1, h), clamp(y2, h));
        for x in x1..=x2 {
            small.put_pixel(x, y1, red);
            small.put_pixel(x, y2, red);
        }
        for y in y1..=y2 {
            small.put_pixel(x1, y, red);
            small.put_pixel(x2, y, red);
        }
    }
    small
}

#[cfg(test)]
mod tests {
    use crate::media::Frame;
    use crate::plugin::Detections;

    #[test]
    fn a_preview_shrinks_the_frame_by_whole_squares() {
        // 660 wide: a factor of 3 (a preview is at most 320 wide), so 220 x 1.
        let (w, h) = (660u32, 3u32);
        let pixels = (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| [(x % 256) as u8, (y * 50) as u8, 7]))
            .collect();
        let frame = Frame::from_rgb("frame", w, h, pixels).unwrap();
        let small = super::preview(&frame, &Detections::default());
        assert_eq!(small.dimensions(), (220, 1));
        for x in 0..220 {
            let red = (0..3).map(|dx| (3 * x + dx) % 256).sum::<u32>() / 3;
            assert_eq!(small.get_pixel(x, 0).0, [red as u8, 50, 7], "pixel {x}");
        }
    }

    #[test]
    fn a_preview_pixel_is_the_exact_mean_of_its_square() {
        for factor in (1..=64u32).chain([65, 100]) {
            let count = factor * factor;
            let mean = super::byte_mean(count);
            for sum in 0..=255 * count {
                assert_eq!(u32::from(mean(sum)), sum / count, "{sum} / {count}");
            }
        }
    }
}
