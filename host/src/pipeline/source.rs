//! Where the inference worker's frames come from: the deploy template's `video_url`, a
//! live RTSP camera, a folder of images or an MP4 (H.264) file played in a loop like the
//! seed's camera stand-in. A source pushes each frame into a [`FrameSink`] (the worker),
//! so it knows nothing of estimators or HEMs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::camera::{CameraOptions, Cameras};
use crate::media::{Frame, InferError, VideoReader};

/// What a source feeds: one call per frame, read or not.
pub trait FrameSink {
    /// Frame `name`, which took `read` to read and decode, or why it could not be read.
    fn frame(&self, name: &str, frame: Result<Frame, InferError>, read: Duration);

    /// The source could not be read at all (`Some(why)`: it is tried again), or can be
    /// again (`None`).
    fn source(&self, _failure: Option<&str>) {}
}

/// A shared sink (the worker is shared with the job that swaps its models).
impl<S: FrameSink + ?Sized> FrameSink for std::sync::Arc<S> {
    fn frame(&self, name: &str, frame: Result<Frame, InferError>, read: Duration) {
        (**self).frame(name, frame, read)
    }

    fn source(&self, failure: Option<&str>) {
        (**self).source(failure)
    }
}

/// How long a folder source waits before looking for new images, and any source after
/// a pass that ran nothing (a missing or empty video).
pub const IDLE_PAUSE: Duration = Duration::from_secs(1);

/// How long a source that cannot be opened waits before it tries again.
pub const RETRY_PAUSE: Duration = Duration::from_secs(5);

/// How a source is read.
#[derive(Clone, Debug)]
pub struct SourceOptions {
    /// Every N-th frame runs.
    pub every: usize,
    /// A video plays at its frame rate (as a camera would deliver it) rather than as
    /// fast as the worker goes.
    pub realtime: bool,
    pub camera: CameraOptions,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            every: 1,
            realtime: true,
            camera: CameraOptions::default(),
        }
    }
}

pub enum FrameSource {
    Images(ImageDir),
    Video(VideoLoop),
    Cameras(Cameras),
    /// A `video_url` that could not be opened yet (a video not written yet, a folder not
    /// mounted yet): each pass tries again.
    Unopened {
        url: String,
        options: SourceOptions,
    },
}

impl FrameSource {
    /// `url` names RTSP cameras (`rtsp://[user:password@]host[:port]/path`, several
    /// separated by commas; they start receiving at once), a folder of images or an MP4
    /// file (a `file://` prefix is allowed).
    pub fn open(url: &str, options: &SourceOptions) -> Result<Self, String> {
        if url.trim_start().starts_with("rtsp") && url.contains("://") {
            let urls: Vec<&str> = url.split(',').map(str::trim).collect();
            let cameras = Cameras::start(&urls, &options.camera, options.every)?;
            return Ok(FrameSource::Cameras(cameras));
        }
        let realtime = options.realtime;
        let path = Path::new(url.strip_prefix("file://").unwrap_or(url));
        let sample = EveryNth::new(options.every);
        if path.is_dir() {
            return Ok(FrameSource::Images(ImageDir {
                dir: path.to_path_buf(),
                seen: Default::default(),
                sample,
            }));
        }
        let is_mp4 = path.extension().and_then(|x| x.to_str()).is_some_and(|x| {
            matches!(
                x.to_ascii_lowercase().as_str(),
                "mp4" | "m4v" | "mov" | "3gp"
            )
        });
        if !is_mp4 {
            return Err(format!(
                "{}: not a folder of images or an MP4 (H.264) file",
                path.display()
            ));
        }
        VideoReader::open(path).map_err(|e| e.to_string())?;
        Ok(FrameSource::Video(VideoLoop {
            path: path.to_path_buf(),
            sample,
            realtime,
            pass: 0,
        }))
    }

    /// What the source is, for logs.
    /// `url` as [`FrameSource::open`] opens it, or, when it cannot be opened now, a source
    /// that tries again at each pass, with why it could not.
    pub fn open_or_retry(url: &str, options: &SourceOptions) -> (Self, Option<String>) {
        match FrameSource::open(url, options) {
            Ok(source) => (source, None),
            Err(why) => (
                FrameSource::Unopened {
                    url: url.to_string(),
                    options: options.clone(),
                },
                Some(why),
            ),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            FrameSource::Images(images) => format!("the images in {}", images.dir.display()),
            FrameSource::Video(video) => format!("the video {} (looped)", video.path.display()),
            FrameSource::Cameras(cameras) => cameras.describe(),
            FrameSource::Unopened { .. } => {
                "a video_url that cannot be opened yet (tried again every 5 s)".into()
            }
        }
    }

    /// Runs one pass into `sink`: the images added since the last pass, or the video from
    /// start to end. A frame that cannot be read goes to the sink as its error, and the
    /// pass goes on. Returns how many frames were run.
    pub fn feed(&mut self, sink: &impl FrameSink) -> anyhow::Result<usize> {
        match self {
            FrameSource::Images(images) => images.feed(sink),
            FrameSource::Video(video) => video.feed(sink),
            FrameSource::Cameras(cameras) => Ok(cameras.feed(IDLE_PAUSE, |name, frame, read| {
                sink.frame(name, Ok(frame), read)
            })),
            FrameSource::Unopened { url, options } => match FrameSource::open(url, options) {
                Ok(opened) => {
                    tracing::info!("video_url opened: {}", opened.describe());
                    sink.source(None);
                    *self = opened;
                    self.feed(sink)
                }
                Err(why) => Err(anyhow::anyhow!(
                    "deploy template env `video_url`: {why} (tried again every {} s)",
                    RETRY_PAUSE.as_secs()
                )),
            },
        }
    }

    /// Feeds `sink` pass after pass, for good: a pass that fails is told to the sink
    /// (which hears again when the source opens), logged when its reason is new, and the
    /// next one tries again.
    pub fn feed_forever(mut self, sink: &impl FrameSink) {
        let mut last: Option<String> = None;
        loop {
            let ran = match self.feed(sink) {
                Ok(ran) => {
                    last = None;
                    ran
                }
                Err(e) => {
                    let why = format!("{e:#}");
                    sink.source(Some(&why));
                    if last.as_deref() != Some(why.as_str()) {
                        tracing::warn!("{why}");
                    }
                    last = Some(why);
                    0
                }
            };
            std::thread::sleep(self.pause_after(ran));
        }
    }

    /// How long to wait after a pass that ran `frames` frames.
    pub fn pause_after(&self, frames: usize) -> Duration {
        match self {
            FrameSource::Unopened { .. } => RETRY_PAUSE,
            FrameSource::Video(_) if frames > 0 => Duration::ZERO,
            // A camera's feed waited for frames itself.
            FrameSource::Cameras(_) => Duration::ZERO,
            _ => IDLE_PAUSE,
        }
    }
}

/// Frame sampling: every N-th frame of the source is run.
struct EveryNth {
    every: u64,
    seen: u64,
}

impl EveryNth {
    fn new(every: usize) -> Self {
        EveryNth {
            every: every.max(1) as u64,
            seen: 0,
        }
    }

    fn take(&mut self) -> bool {
        let take = self.seen.is_multiple_of(self.every);
        self.seen += 1;
        take
    }
}

/// A folder of images (PNG, JPEG), in name order; images added later are picked up by
/// the next pass.
pub struct ImageDir {
    dir: PathBuf,
    seen: std::collections::HashSet<PathBuf>,
    sample: EveryNth,
}

impl ImageDir {
    /// The images not returned before, in name order.
    fn new_images(&mut self) -> std::io::Result<Vec<PathBuf>> {
        let mut fresh: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().and_then(|x| x.to_str()).is_some_and(|x| {
                    matches!(x.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg")
                })
            })
            .filter(|p| !self.seen.contains(p))
            .collect();
        fresh.sort();
        self.seen.extend(fresh.iter().cloned());
        Ok(fresh)
    }

    fn feed(&mut self, sink: &impl FrameSink) -> anyhow::Result<usize> {
        let images = self.new_images().map_err(|e| {
            anyhow::anyhow!("cannot list the images in {}: {e}", self.dir.display())
        })?;
        let mut ran = 0;
        for path in images.iter().filter(|_| self.sample.take()) {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let started = Instant::now();
            let frame = Frame::open(path);
            sink.frame(&name, frame, started.elapsed());
            ran += 1;
        }
        Ok(ran)
    }
}

/// An MP4 file played from the start on each pass. Frames are named
/// `<file stem>-<pass>-<frame number>`, so hard examples from later passes do not
/// replace earlier ones.
pub struct VideoLoop {
    path: PathBuf,
    sample: EveryNth,
    realtime: bool,
    pass: u64,
}

impl VideoLoop {
    fn feed(&mut self, sink: &impl FrameSink) -> anyhow::Result<usize> {
        let video = VideoReader::open(&self.path)?;
        let stem = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (pass, start) = (self.pass, Instant::now());
        self.pass += 1;
        let mut ran = 0;
        let mut frames = video.enumerate();
        loop {
            let reading = Instant::now();
            let Some((number, frame)) = frames.next() else {
                break;
            };
            let read = reading.elapsed();
            let name = format!("{stem}-{pass}-{number:06}");
            if !self.sample.take() {
                continue;
            }
            if let Ok(frame) = &frame
                && self.realtime
            {
                let due = start + frame.time;
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            sink.frame(
                &name,
                frame.map(|f| Frame::from_image(&name, f.image)),
                read,
            );
            ran += 1;
        }
        Ok(ran)
    }
}
