//! Live RTSP cameras as a frame source. Each camera's receiver thread keeps its
//! connection up (reconnecting with backoff and jitter after a refusal, a drop, a server
//! restart or a stall, for as long as the source lives), decodes every frame, and leaves
//! only the newest for the worker: a worker slower than its cameras runs current frames,
//! and the ones it never saw are counted as dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::media::rtsp::{CameraUrl, RtspError, RtspStream, Transport};
use crate::media::{Frame, H264Decoder};
use crate::metrics::{Histogram, HistogramSnapshot};

/// How a camera is read; the deploy template's `rtsp_transport`, `stall_seconds`,
/// `reconnect_first_ms`, `reconnect_max_seconds`, `max_fps` and `reconnect_attempts`.
#[derive(Clone, Debug)]
pub struct CameraOptions {
    pub transport: Transport,
    /// No frame for this long while streaming: the stream has stalled; reconnect.
    pub stall: Duration,
    /// How long each RTSP request may take when connecting.
    pub connect_timeout: Duration,
    pub backoff: Backoff,
    /// At most this many frames a second of each camera run (the rest are skipped).
    pub max_fps: Option<f64>,
    /// Connections that may fail in a row before the camera is given up; `None`: it is
    /// tried for as long as the source lives.
    pub attempts: Option<u32>,
}

impl Default for CameraOptions {
    fn default() -> Self {
        CameraOptions {
            transport: Transport::Tcp,
            stall: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
            max_fps: None,
            attempts: None,
        }
    }
}

/// Waits between connection attempts: `first`, doubling to `max`, each scaled by a random
/// factor in [0.5, 1] so that cameras that dropped together do not retry together.
/// A connection that delivered frames starts the sequence again.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    /// Half a second first; at most 5 s apart, as Sedna's own workers retry.
    fn default() -> Self {
        Backoff {
            first: Duration::from_millis(500),
            max: Duration::from_secs(5),
        }
    }
}

impl Backoff {
    /// The wait before retry `attempt` (0 for the first), `jitter` in [0, 1).
    pub fn wait(&self, attempt: u32, jitter: f64) -> Duration {
        let full = self
            .first
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.max);
        full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// Where a camera's connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CameraState {
    Connecting,
    Streaming,
    BackingOff,
    /// `reconnect_attempts` connections failed in a row: the camera is no longer tried.
    GaveUp,
}

impl std::fmt::Display for CameraState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CameraState::Connecting => "connecting",
            CameraState::Streaming => "streaming",
            CameraState::BackingOff => "backing off",
            CameraState::GaveUp => "gave up",
        })
    }
}

/// What a camera has done, for status and metrics. The URL is redacted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CameraStats {
    /// What its frames are named after (`camera`, or `camera1`, ... of several).
    pub name: String,
    /// Its URL, redacted.
    pub camera: String,
    pub state: CameraState,
    /// Connection attempts after the first.
    pub reconnects: u64,
    /// Frames decoded.
    pub frames: u64,
    /// Frames replaced by a newer one before the worker took them.
    pub dropped: u64,
    /// Frames that did not decode (the stream resumed at the next key frame).
    pub decode_errors: u64,
    /// When the last frame was decoded (seconds since the Unix epoch).
    pub last_frame_unix: Option<f64>,
    /// Why the last connection ended or failed.
    pub last_error: Option<String>,
    /// Frame age: from a frame's capture to the worker's decision on it.
    pub age: HistogramSnapshot,
    /// Where the last frame's age was measured from.
    pub age_from: AgeFrom,
}

/// Where a frame's age starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgeFrom {
    /// Its arrival: the camera has sent no RTCP sender report yet (or its clock is
    /// ahead of this host's).
    #[default]
    Arrival,
    /// Its capture, by the camera's clock as its RTCP sender reports give it: the
    /// camera's encoder and the network are counted too (on the same host or hosts
    /// whose clocks agree, as NTP keeps them).
    Capture,
}

/// How long before its arrival a camera captured a frame that left more than this ago
/// is taken as the two clocks disagreeing, not as the frame's age.
const CLOCKS_DISAGREE: Duration = Duration::from_secs(60);

/// A frame waiting for the worker.
struct Captured {
    name: String,
    image: RgbImage,
    /// Its capture (or arrival), as this host's monotonic clock tells it.
    since: Instant,
    decode: Duration,
}

/// The newest decoded frame of one camera, shared between its receiver and the worker.
#[derive(Default)]
struct Newest {
    frame: Mutex<Option<Captured>>,
}

impl Newest {
    /// Leaves `frame` for the worker; true when it replaced one the worker never took.
    fn put(&self, frame: Captured) -> bool {
        self.frame.lock().unwrap().replace(frame).is_some()
    }

    fn take(&self) -> Option<Captured> {
        self.frame.lock().unwrap().take()
    }
}

/// Rung by every camera of a source when it leaves a frame, so that the worker waits on
/// all of them at once.
#[derive(Default)]
struct Bell {
    rung: Mutex<u64>,
    ringing: Condvar,
}

impl Bell {
    fn ring(&self) {
        *self.rung.lock().unwrap() += 1;
        self.ringing.notify_all();
    }

    fn count(&self) -> u64 {
        *self.rung.lock().unwrap()
    }

    /// Waits up to `wait` for a ring after the `seen`-th.
    fn wait_after(&self, seen: u64, wait: Duration) {
        let rung = self.rung.lock().unwrap();
        let _ = self
            .ringing
            .wait_timeout_while(rung, wait, |rung| *rung == seen)
            .unwrap();
    }
}

/// What the receiver and the worker's side share.
struct Shared {
    url: CameraUrl,
    /// Names frames: `<name>-<connection start, ms since the epoch>-<frame>`.
    name: String,
    options: CameraOptions,
    every: u64,
    stats: Mutex<CameraStats>,
    age: Histogram,
    newest: Newest,
    bell: Arc<Bell>,
    stop: AtomicBool,
}

impl Shared {
    fn update(&self, change: impl FnOnce(&mut CameraStats)) {
        change(&mut self.stats.lock().unwrap());
    }
}

/// The cameras of one worker, each with its own connection and reconnect state, all
/// feeding the one worker in turn. Dropping it stops their receivers.
pub struct Cameras {
    cameras: Vec<Arc<Shared>>,
    bell: Arc<Bell>,
}

impl Cameras {
    /// Starts receiving from each URL at once (in the background: a camera that is not
    /// there yet is retried). Frames are named after `camera` for one camera, `camera1`,
    /// `camera2`, ... for several; every `every`-th frame of each runs.
    pub fn start(urls: &[&str], options: &CameraOptions, every: usize) -> Result<Self, String> {
        let parsed: Vec<CameraUrl> = urls
            .iter()
            .map(|url| CameraUrl::parse(url))
            .collect::<Result<_, _>>()?;
        let bell = Arc::new(Bell::default());
        let mut cameras = Vec::with_capacity(parsed.len());
        for (n, url) in parsed.into_iter().enumerate() {
            let name = if urls.len() == 1 {
                "camera".to_string()
            } else {
                format!("camera{}", n + 1)
            };
            let stats = CameraStats {
                name: name.clone(),
                camera: url.redacted().to_string(),
                state: CameraState::Connecting,
                reconnects: 0,
                frames: 0,
                dropped: 0,
                decode_errors: 0,
                last_frame_unix: None,
                last_error: None,
                age: HistogramSnapshot::default(),
                age_from: AgeFrom::Arrival,
            };
            let shared = Arc::new(Shared {
                url,
                name,
                options: options.clone(),
                every: every.max(1) as u64,
                stats: Mutex::new(stats),
                age: Histogram::default(),
                newest: Newest::default(),
                bell: bell.clone(),
                stop: AtomicBool::new(false),
            });
            let receiver = shared.clone();
            std::thread::Builder::new()
                .name(format!("{} receiver", shared.name))
                .spawn(move || receive(&receiver))
                .map_err(|e| format!("cannot start a camera's thread: {e}"))?;
            cameras.push(shared);
        }
        Ok(Cameras { cameras, bell })
    }

    /// The cameras' URLs, redacted.
    pub fn describe(&self) -> String {
        let urls: Vec<&str> = self.cameras.iter().map(|c| c.url.redacted()).collect();
        match urls.as_slice() {
            [one] => format!("the camera {one}"),
            many => format!("the cameras {}", many.join(", ")),
        }
    }

    /// What each camera has done, in `video_url`'s order.
    pub fn stats(&self) -> Vec<CameraStats> {
        self.watch().stats()
    }

    /// A view of the cameras' stats that outlives this source being fed elsewhere.
    pub fn watch(&self) -> CameraWatch {
        CameraWatch(self.cameras.clone())
    }

    /// Hands `run` the newest frame of each camera in turn (name, frame, decoding time)
    /// for `pass`; returns how many ran. A frame's age runs until `run` returns.
    pub fn feed(&self, pass: Duration, mut run: impl FnMut(&str, Frame, Duration)) -> usize {
        let (mut ran, end) = (0, Instant::now() + pass);
        let mut first = 0;
        loop {
            let rung = self.bell.count();
            let mut any = false;
            for i in 0..self.cameras.len() {
                let camera = &self.cameras[(first + i) % self.cameras.len()];
                let Some(frame) = camera.newest.take() else {
                    continue;
                };
                let image = Frame::from_image(&frame.name, frame.image);
                run(&frame.name, image, frame.decode);
                camera.age.observe(frame.since.elapsed());
                (ran, any) = (ran + 1, true);
            }
            first = (first + 1) % self.cameras.len();
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return ran;
            }
            if !any {
                self.bell.wait_after(rung, left);
            }
        }
    }
}

impl Drop for Cameras {
    fn drop(&mut self) {
        for camera in &self.cameras {
            camera.stop.store(true, Ordering::Relaxed);
        }
    }
}

/// The stats of a source's cameras, for status and metrics.
#[derive(Clone)]
pub struct CameraWatch(Vec<Arc<Shared>>);

impl CameraWatch {
    pub fn stats(&self) -> Vec<CameraStats> {
        self.0
            .iter()
            .map(|c| CameraStats {
                age: c.age.snapshot(),
                ..c.stats.lock().unwrap().clone()
            })
            .collect()
    }
}

/// The receiver thread: connect, stream until the connection ends, wait, again.
fn receive(shared: &Shared) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("{}: cannot start: {e}", shared.url.redacted());
            return;
        }
    };
    let mut attempt = 0u32;
    let mut seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    while !shared.stop.load(Ordering::Relaxed) {
        shared.update(|s| s.state = CameraState::Connecting);
        let (frames, error) = runtime.block_on(stream(shared));
        let Some(error) = error else {
            break;
        };
        if frames > 0 {
            attempt = 0;
        }
        if shared
            .options
            .attempts
            .is_some_and(|most| attempt + 1 >= most)
        {
            let attempts = attempt + 1;
            tracing::error!(
                "{error}; giving up after {attempts} failed connections in a row (reconnect_attempts)"
            );
            shared.update(|s| {
                s.state = CameraState::GaveUp;
                s.last_error = Some(format!(
                    "{error}; gave up after {attempts} failed connections in a row (reconnect_attempts)"
                ));
            });
            break;
        }
        let wait = shared.options.backoff.wait(attempt, next_unit(&mut seed));
        attempt = attempt.saturating_add(1);
        tracing::warn!("{error}; reconnecting in {:.1} s", wait.as_secs_f32());
        shared.update(|s| {
            s.state = CameraState::BackingOff;
            s.last_error = Some(error.to_string());
            s.reconnects += 1;
        });
        let until = Instant::now() + wait;
        while !shared.stop.load(Ordering::Relaxed) && Instant::now() < until {
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
        }
    }
}

/// When a frame's age starts, on this host's monotonic clock: its capture when the
/// camera's clock gives it and agrees with this host's, else now (its arrival).
fn start_of_age(captured: Option<SystemTime>) -> (Instant, AgeFrom) {
    let arrived = Instant::now();
    let behind = captured.and_then(|c| SystemTime::now().duration_since(c).ok());
    match behind.filter(|&b| b < CLOCKS_DISAGREE) {
        Some(behind) => (
            arrived.checked_sub(behind).unwrap_or(arrived),
            AgeFrom::Capture,
        ),
        None => (arrived, AgeFrom::Arrival),
    }
}

/// One connection: the frames it delivered and why it ended (`None`: told to stop).
async fn stream(shared: &Shared) -> (u64, Option<RtspError>) {
    let options = &shared.options;
    let mut rtsp = match RtspStream::connect(
        &shared.url,
        options.transport,
        options.connect_timeout,
        options.stall,
    )
    .await
    {
        Ok(rtsp) => rtsp,
        Err(e) => return (0, Some(e)),
    };
    let mut decoder = match H264Decoder::new() {
        Ok(decoder) => decoder,
        Err(reason) => {
            let camera = shared.url.redacted().to_string();
            return (0, Some(RtspError::Broken { camera, reason }));
        }
    };
    tracing::info!("{}: streaming", shared.url.redacted());
    shared.update(|s| s.state = CameraState::Streaming);
    let started = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let (mut decoded, mut awaiting_key) = (0u64, true);
    let mut pace = Pace::new(options.max_fps);
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return (decoded, None);
        }
        let unit = match rtsp.next().await {
            Ok(unit) => unit,
            Err(e) => return (decoded, Some(e)),
        };
        // Decoding starts, and restarts after an error, at a key frame.
        if awaiting_key && !unit.key {
            continue;
        }
        awaiting_key = false;
        let (since, age_from) = start_of_age(unit.captured);
        let decoding = Instant::now();
        let image = match decoder.decode(&unit.data) {
            Ok(Some(image)) => image,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(
                    "{}: a frame does not decode ({e}{}); resuming at the next key frame",
                    shared.url.redacted(),
                    if unit.loss > 0 {
                        format!(", {} packets lost before it", unit.loss)
                    } else {
                        String::new()
                    }
                );
                shared.update(|s| s.decode_errors += 1);
                awaiting_key = true;
                continue;
            }
        };
        let decode = decoding.elapsed();
        decoded += 1;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        shared.update(|s| {
            s.frames += 1;
            s.last_frame_unix = Some(now.as_secs_f64());
            s.age_from = age_from;
        });
        if !(decoded - 1).is_multiple_of(shared.every) || !pace.admit(Instant::now()) {
            continue;
        }
        let name = format!("{}-{started}-{decoded:06}", shared.name);
        let frame = Captured {
            name,
            image,
            since,
            decode,
        };
        if shared.newest.put(frame) {
            shared.update(|s| s.dropped += 1);
        }
        shared.bell.ring();
    }
}

/// `max_fps`: admits frames at most that often on average, the ones between skipped
/// (sampled out, as by `every_nth_frame`, not counted as dropped).
struct Pace {
    period: Option<Duration>,
    next: Option<Instant>,
}

impl Pace {
    fn new(max_fps: Option<f64>) -> Self {
        let period = max_fps.map(|fps| Duration::from_secs_f64(1.0 / fps));
        Pace { period, next: None }
    }

    fn admit(&mut self, now: Instant) -> bool {
        let Some(period) = self.period else {
            return true;
        };
        if self.next.is_some_and(|next| now < next) {
            return false;
        }
        // The schedule keeps the average rate (a frame late by up to half a period is
        // caught up on); after a gap it starts again from about now, with no burst.
        let floor = now.checked_sub(period / 2).unwrap_or(now);
        let next = self.next.map_or(now, |next| next.max(floor));
        self.next = Some(next + period);
        true
    }
}

/// A number in [0, 1) from a xorshift state (jitter needs no better randomness).
fn next_unit(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_fast_doubles_and_is_capped() {
        let backoff = Backoff {
            first: Duration::from_millis(500),
            max: Duration::from_secs(5),
        };
        let top = |attempt| backoff.wait(attempt, 0.999_999);
        assert!(top(0) <= Duration::from_millis(500) && top(0) > Duration::from_millis(499));
        assert!(top(1) > Duration::from_millis(999));
        assert_eq!(top(10), top(60));
        assert!(top(60) <= Duration::from_secs(5));
        // The jitter takes at most half away.
        assert_eq!(backoff.wait(0, 0.0), Duration::from_millis(250));
        let mut state = 7;
        let draws: Vec<f64> = (0..1000).map(|_| next_unit(&mut state)).collect();
        assert!(draws.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(draws.iter().any(|x| *x < 0.1) && draws.iter().any(|x| *x > 0.9));
    }

    #[test]
    fn the_worker_gets_the_newest_frame_and_the_rest_are_counted_as_dropped() {
        let newest = Newest::default();
        let frame = |name: &str| Captured {
            name: name.into(),
            image: RgbImage::new(2, 2),
            since: Instant::now(),
            decode: Duration::ZERO,
        };
        assert!(!newest.put(frame("a")));
        assert!(newest.put(frame("b")));
        assert_eq!(newest.take().unwrap().name, "b");
        assert!(newest.take().is_none());
    }

    #[test]
    fn age_starts_at_capture_when_the_clocks_agree() {
        let (since, from) = start_of_age(Some(SystemTime::now() - Duration::from_millis(300)));
        assert_eq!(from, AgeFrom::Capture);
        assert!(since.elapsed() >= Duration::from_millis(300));
        // No sender report yet, a camera clock ahead of ours, or one far behind: arrival.
        for captured in [
            None,
            Some(SystemTime::now() + Duration::from_secs(5)),
            Some(SystemTime::now() - Duration::from_secs(3600)),
        ] {
            let (since, from) = start_of_age(captured);
            assert_eq!(from, AgeFrom::Arrival, "{captured:?}");
            assert!(since.elapsed() < Duration::from_secs(1));
        }
    }

    #[test]
    fn max_fps_keeps_the_average_rate_of_a_faster_camera() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        // A 25 frames/s camera (a frame every 40 ms) paced to 10 frames/s.
        let mut pace = Pace::new(Some(10.0));
        let admitted = (0..250).filter(|n| pace.admit(at(n * 40))).count();
        assert!((99..=101).contains(&admitted), "{admitted} in 10 s");
        // After a gap the schedule does not let a burst through.
        let mut pace = Pace::new(Some(10.0));
        assert!(pace.admit(at(0)));
        assert!(pace.admit(at(5000)));
        assert!(!pace.admit(at(5040)));
        assert!(Pace::new(None).admit(at(0)));
    }
}
