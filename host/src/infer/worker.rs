//! The inference worker: frames from a source go through the estimator and the HEM;
//! hard examples are kept (the raw frame and the prediction as a pre-label) for people
//! to label. A deployed model is swapped in between two frames, never during one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Frame;
use super::results::{ResultLog, json_line};
use crate::files::write_atomically;
use crate::metrics::{Counter, Histogram};
use crate::plugin::json::prediction_to_json;
use crate::plugin::{
    Estimator, Hem, Param, Plugin, PluginError, Prediction, Sandbox, Slot, Source, World,
};

/// What the worker did with one frame.
#[derive(Debug)]
pub struct Outcome {
    pub prediction: Prediction,
    pub hard: bool,
}

/// Counters and latencies for the job's status and `/metrics`.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub frames: Counter,
    pub hard: Counter,
    pub failed: Counter,
    /// Model swaps (a deployed model, or a bound estimator or HEM).
    pub swaps: Counter,
    /// How long the last model swap took, from asking to serving (load, smoke test,
    /// swap), in µs.
    pub last_swap_micros: AtomicU64,
    pub stages: FrameStages,
}

/// Where a frame's time goes.
#[derive(Debug, Default)]
pub struct FrameStages {
    /// Reading and decoding the frame (an image file, a video frame).
    pub read: Histogram,
    /// The estimator's `predict`: pre-processing and the model.
    pub predict: Histogram,
    /// The HEM's decision.
    pub mine: Histogram,
    /// Writing a hard example.
    pub keep: Histogram,
}

impl FrameStages {
    /// Each stage with its name in `/metrics`.
    pub fn named(&self) -> [(&'static str, &Histogram); 4] {
        [
            ("read", &self.read),
            ("predict", &self.predict),
            ("mine", &self.mine),
            ("keep", &self.keep),
        ]
    }
}

pub struct InferenceWorker {
    estimator: Slot<Estimator>,
    hem: Slot<Hem>,
    store: HardExampleStore,
    results: Option<ResultLog>,
    /// Held for each frame, and for a whole swap when hot update is off.
    frame_gate: std::sync::Mutex<()>,
    /// The last `RECENT_DECISIONS` decisions, oldest first (the `hard_examples` metric).
    recent: std::sync::Mutex<std::collections::VecDeque<bool>>,
    pub stats: WorkerStats,
}

/// Decisions the worker remembers for the `hard_examples` metric: the largest window
/// the built-in `HardExampleRatio` condition accepts.
pub const RECENT_DECISIONS: usize = 100_000;

impl InferenceWorker {
    pub fn new(estimator: Slot<Estimator>, hem: Slot<Hem>, store: HardExampleStore) -> Self {
        InferenceWorker {
            estimator,
            hem,
            store,
            results: None,
            frame_gate: Default::default(),
            recent: Default::default(),
            stats: WorkerStats::default(),
        }
    }

    /// Also writes every frame's outcome as a JSON line to `log`.
    pub fn with_results(mut self, log: ResultLog) -> Self {
        self.results = Some(log);
        self
    }

    /// Predicts, mines and (when hard) stores one frame. The estimator and HEM versions
    /// are taken once, so a swap lands between frames.
    pub fn process(&self, name: &str, frame: &Arc<Frame>) -> Result<Outcome, PluginError> {
        let _frame = self.frame_gate.lock().unwrap_or_else(|e| e.into_inner());
        let (estimator, hem) = (self.estimator.get(), self.hem.get());
        let stages = &self.stats.stages;
        let result = stages
            .predict
            .time(|| estimator.predict(frame))
            .and_then(|prediction| {
                let hard = stages.mine.time(|| hem.is_hard_example(&prediction))?;
                Ok(Outcome { prediction, hard })
            });
        self.stats.frames.inc();
        if let Ok(outcome) = &result {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() == RECENT_DECISIONS {
                recent.pop_front();
            }
            recent.push_back(outcome.hard);
        }
        match &result {
            Ok(outcome) if outcome.hard => {
                self.stats.hard.inc();
                stages
                    .keep
                    .time(|| self.store.save(name, frame, &outcome.prediction));
            }
            Ok(_) => {}
            Err(_) => self.stats.failed.inc(),
        }
        match &result {
            Ok(o) => self.log_result(serde_json::json!({
                "frame": name, "hard": o.hard, "prediction": prediction_to_json(&o.prediction)
            })),
            Err(e) => self.log_result(serde_json::json!({"frame": name, "error": e.to_string()})),
        }
        result
    }

    /// Counts a frame that could not even be read, and says so in the results.
    pub fn unreadable(&self, name: &str, error: &str) {
        self.stats.frames.inc();
        self.stats.failed.inc();
        self.log_result(serde_json::json!({"frame": name, "error": error}));
    }

    fn log_result(&self, line: serde_json::Value) {
        if let Some(log) = &self.results
            && let Err(e) = log.append(&line)
        {
            tracing::warn!("cannot write the inference results: {e:#}");
        }
    }

    /// Swaps to `model` (same estimator and parameters); a model that does not load is
    /// refused and the serving one stays. `hot` (`hotUpdateEnabled`): it loads beside the
    /// serving one while frames go on. Otherwise the worker restarts: it stops between two
    /// frames, loads the model and goes on; frames wait meanwhile, none is dropped.
    pub fn swap_model(&self, model: &Path, hot: bool) -> Result<(), PluginError> {
        let started = std::time::Instant::now();
        let _stopped = (!hot).then(|| self.frame_gate.lock().unwrap_or_else(|e| e.into_inner()));
        let current = self.estimator.get();
        let source = current.source().clone();
        let sandbox = Sandbox {
            models: vec![("model".into(), model.to_path_buf())],
            ..current.sandbox().clone()
        };
        self.estimator
            .replace_with(&source, current.params().to_vec(), sandbox)?;
        self.stats.swaps.inc();
        let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.stats.last_swap_micros.store(took, Ordering::Relaxed);
        Ok(())
    }

    /// Binds another HEM component (with `params`, else the serving one's): it is loaded
    /// and initialised beside the serving one, then swapped in between two frames. One
    /// that fails to load or initialise is refused and the serving one stays.
    pub fn bind_hem(&self, source: &Source, params: Option<Vec<Param>>) -> Result<(), PluginError> {
        rebind(&self.hem, source, params)
    }

    /// Binds another estimator component on the serving model, as `bind_hem` does.
    pub fn bind_estimator(
        &self,
        source: &Source,
        params: Option<Vec<Param>>,
    ) -> Result<(), PluginError> {
        rebind(&self.estimator, source, params)?;
        self.stats.swaps.inc();
        Ok(())
    }

    /// The recent decisions, oldest first, as 1 (hard) and 0: the `hard_examples` metric
    /// trigger conditions read.
    pub fn recent_decisions(&self) -> Vec<f64> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent
            .iter()
            .map(|&hard| f64::from(u8::from(hard)))
            .collect()
    }

    /// The estimator serving now.
    pub fn estimator(&self) -> Arc<Plugin<Estimator>> {
        self.estimator.get()
    }

    /// The HEM serving now.
    pub fn hem(&self) -> Arc<Plugin<Hem>> {
        self.hem.get()
    }

    pub fn store(&self) -> &HardExampleStore {
        &self.store
    }
}

/// Swaps `source` into `slot` with `params` (else the serving plugin's) and its sandbox.
fn rebind<W: World>(
    slot: &Slot<W>,
    source: &Source,
    params: Option<Vec<Param>>,
) -> Result<(), PluginError> {
    let current = slot.get();
    let params = params.unwrap_or_else(|| current.params().to_vec());
    slot.replace_with(source, params, current.sandbox().clone())
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
        })
    }

    pub fn dir(&self) -> &Path {
        &self.disk.dir
    }

    /// Queues the frame to be kept (waits while [`KEEP_QUEUE`] examples wait already).
    fn save(&self, name: &str, frame: &Arc<Frame>, prediction: &Prediction) {
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

/// A kept frame's image (not its preview, not the index).
fn is_example(path: &Path) -> bool {
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
        let line = serde_json::json!({
            "image": image.file_name().map(|n| n.to_string_lossy().into_owned()),
            "width": frame.width(),
            "height": frame.height(),
            "prediction": prediction_to_json(prediction),
        });
        use std::io::Write as _;
        let mut index = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("index.jsonl"))?;
        index.write_all(&json_line(&line))?;
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
    use super::Frame;
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
