//! RTSP cameras (issue 21), side by side in one run, at 640x352 and 1920x1080, 25
//! frames/s over loopback from GStreamer's RTSP server (`tests/rtsp/serve.py`, which
//! re-encodes the video with x264 in a process of its own):
//! - CPU time per frame to receive, depacketise and decode the stream, against decoding
//!   the same stream from a file (target <= 1.1x): the access units received, written
//!   into an MP4 and played by the project's `VideoReader` at 25 frames/s, as the worker
//!   plays a file; and, stricter, against the time spent decoding in the same run, the
//!   same units decoded from memory at 25 frames/s, and back to back (warm caches: a
//!   paced decoder starts each frame with colder ones);
//! - frame age (captured, by the server's RTCP sender reports, to decided) at the worker's
//!   side of a camera source, p50 and p99
//!   (bucket upper bounds), with a worker that takes 10 ms a frame;
//! - the time from the server coming back (after 3 s away) to the first frame decided,
//!   with the default reconnect backoff.
//!
//! `cargo bench -p sedna --bench camera` (about a minute; skipped, and said so, where
//! the server's packages are missing: `bash host/tests/rtsp/install.sh`).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sedna::media::rtsp::{CameraUrl, RtspStream, Transport};
use sedna::media::{Frame, H264Decoder, InferError, VideoReader, VideoWriter};
use sedna::pipeline::{CameraOptions, FrameSink, FrameSource, SourceOptions};

#[path = "../tests/rtsp/server.rs"]
mod server;
use server::{Server, free_port, server_available};

/// Frames measured per resolution: ten seconds of the stream.
const FRAMES: usize = 250;

/// This thread's CPU time so far (nanosecond resolution).
fn cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the struct it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Two seconds of a bright square sweeping over a gradient, at `width` x `height`.
fn record(width: u32, height: u32) -> PathBuf {
    let path = std::env::temp_dir().join(format!("sedna-camera-bench-{width}x{height}.mp4"));
    if path.exists() {
        return path;
    }
    let mut writer = VideoWriter::create(&path, width, height, 25).unwrap();
    let side = height / 4;
    for n in 0..50 {
        let left = n * (width - side) / 50;
        let image = image::RgbImage::from_fn(width, height, |x, y| {
            if (left..left + side).contains(&x) && (side..2 * side).contains(&y) {
                image::Rgb([250, 220, 40])
            } else {
                image::Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 90])
            }
        });
        writer.write(&image).unwrap();
    }
    writer.finish().unwrap();
    path
}

/// What receiving `FRAMES` frames cost this thread (the runtime runs on it).
struct Received {
    units: Vec<Vec<u8>>,
    /// Receive, depacketise and decode.
    total: Duration,
    /// Of which inside the decoder.
    decoding: Duration,
}

/// Receives, depacketises and decodes `FRAMES` frames from the first key frame on.
fn receive(url: &str) -> Received {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let url = CameraUrl::parse(url).unwrap();
        let second = Duration::from_secs(10);
        let mut stream = RtspStream::connect(&url, Transport::Tcp, second, second)
            .await
            .unwrap();
        let mut unit = stream.next().await.unwrap();
        while !unit.key {
            unit = stream.next().await.unwrap();
        }
        let mut decoder = H264Decoder::new().unwrap();
        let mut units = Vec::with_capacity(FRAMES);
        let (start, mut decoding) = (cpu(), Duration::ZERO);
        loop {
            let before = cpu();
            decoder.decode(&unit.data).unwrap();
            decoding += cpu() - before;
            units.push(unit.data);
            if units.len() == FRAMES {
                let total = cpu() - start;
                return Received {
                    units,
                    total,
                    decoding,
                };
            }
            unit = stream.next().await.unwrap();
        }
    })
}

/// Decodes the same access units from memory, one every `period` (as the worker plays a
/// file at its frame rate) or back to back; the CPU time it took.
fn decode(units: &[Vec<u8>], period: Duration) -> Duration {
    let mut decoder = H264Decoder::new().unwrap();
    let (start, mut due) = (cpu(), Instant::now());
    for unit in units {
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        due += period;
        decoder.decode(unit).unwrap();
    }
    cpu() - start
}

/// The NAL units of an Annex B access unit.
fn nal_units(annex_b: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= annex_b.len() {
        if annex_b[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut units = Vec::with_capacity(starts.len());
    for (n, &start) in starts.iter().enumerate() {
        let mut end = starts.get(n + 1).map_or(annex_b.len(), |&next| next - 3);
        // A four-byte start code leaves a zero behind the unit before it.
        while end > start && annex_b[end - 1] == 0 && n + 1 < starts.len() {
            end -= 1;
        }
        units.push(&annex_b[start..end]);
    }
    units
}

/// Writes access units (the first a key frame with its parameter sets) into an MP4 of
/// `width` x `height` at 25 frames/s, as a camera's recording would be.
fn mux(units: &[Vec<u8>], width: u32, height: u32, path: &Path) {
    let first = nal_units(&units[0]);
    let find = |kind: u8| {
        first
            .iter()
            .find(|u| u.first().is_some_and(|b| b & 0x1f == kind))
            .expect("the first unit carries SPS and PPS")
            .to_vec()
    };
    let config = mp4::Mp4Config {
        major_brand: str::parse("isom").unwrap(),
        minor_version: 512,
        compatible_brands: ["isom", "avc1"]
            .iter()
            .map(|b| str::parse(b).unwrap())
            .collect(),
        timescale: 1000,
    };
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut mp4 = mp4::Mp4Writer::write_start(file, &config).unwrap();
    mp4.add_track(&mp4::TrackConfig::from(mp4::MediaConfig::AvcConfig(
        mp4::AvcConfig {
            width: width as u16,
            height: height as u16,
            seq_param_set: find(7),
            pic_param_set: find(8),
        },
    )))
    .unwrap();
    for (n, unit) in units.iter().enumerate() {
        let (mut sample, mut key) = (Vec::new(), false);
        for nal in nal_units(unit) {
            match nal.first().map(|b| b & 0x1f) {
                // Parameter sets live in the track's header; delimiters are not needed.
                Some(7..=9) | None => continue,
                Some(kind) => key |= kind == 5,
            }
            sample.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            sample.extend_from_slice(nal);
        }
        let sample = mp4::Mp4Sample {
            start_time: n as u64 * 40,
            duration: 40,
            rendering_offset: 0,
            is_sync: key,
            bytes: sample.into(),
        };
        mp4.write_sample(1, &sample).unwrap();
    }
    mp4.write_end().unwrap();
}

/// Plays `path` with the project's reader at 25 frames/s; the CPU time it took and the
/// frames it gave.
fn play(path: &Path) -> (Duration, usize) {
    let (start, mut due) = (cpu(), Instant::now());
    let mut frames = 0;
    for frame in VideoReader::open(path).unwrap() {
        frame.unwrap();
        frames += 1;
        due += Duration::from_millis(40);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    (cpu() - start, frames)
}

/// A worker that takes 10 ms a frame and notes when it saw its first one.
#[derive(Default)]
struct Worker {
    first: Mutex<Option<Instant>>,
}

impl FrameSink for Worker {
    fn frame(&self, _: &str, _: Result<Frame, InferError>, _: Duration) {
        self.first.lock().unwrap().get_or_insert_with(Instant::now);
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn bench(width: u32, height: u32, video: &Path) {
    let port = free_port();
    let url = format!("rtsp://127.0.0.1:{port}/cam");
    let server = Server::start(port, video, &[]);

    let received = receive(&url);
    let recording =
        std::env::temp_dir().join(format!("sedna-camera-bench-{width}x{height}-received.mp4"));
    mux(&received.units, width, height, &recording);
    let (played, frames) = play(&recording);
    assert_eq!(frames, FRAMES, "the recording plays every frame");
    let paced = decode(&received.units, Duration::from_millis(40));
    let from_memory = decode(&received.units, Duration::ZERO);
    let bytes: usize = received.units.iter().map(Vec::len).sum();
    let per_frame = |d: Duration| ms(d) / FRAMES as f64;
    println!(
        "{width}x{height}: receive + depacketise + decode {:.2} ms CPU a frame, of which decoding {:.2} ms: {:.3}x ({} frames, {:.0} kB/s)",
        per_frame(received.total),
        per_frame(received.decoding),
        received.total.as_secs_f64() / received.decoding.as_secs_f64(),
        FRAMES,
        bytes as f64 / 1000.0 / (FRAMES as f64 / 25.0),
    );
    println!(
        "{width}x{height}: the same stream from a file (an MP4 of the units received, played at 25 frames/s): {:.2} ms a frame ({:.3}x of that; target <= 1.1x)",
        per_frame(played),
        received.total.as_secs_f64() / played.as_secs_f64(),
    );
    println!(
        "{width}x{height}: the same frames decoded from memory at 25 frames/s: {:.2} ms a frame ({:.3}x of that)",
        per_frame(paced),
        received.total.as_secs_f64() / paced.as_secs_f64(),
    );
    println!(
        "{width}x{height}: the same frames decoded back to back from memory, as from a file read at full speed: {:.2} ms a frame ({:.3}x of that)",
        per_frame(from_memory),
        received.total.as_secs_f64() / from_memory.as_secs_f64(),
    );

    let options = SourceOptions::default();
    let mut source = FrameSource::open(&url, &options).unwrap();
    let worker = Worker::default();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        source.feed(&worker).unwrap();
    }
    let FrameSource::Cameras(cameras) = &source else {
        unreachable!("an rtsp:// URL opens cameras")
    };
    let stats = cameras.stats().remove(0);
    let quantile = |q| {
        stats
            .age
            .quantile(q)
            .map_or("> 600000".to_string(), |s| format!("<= {}", s * 1000.0))
    };
    println!(
        "{width}x{height}: frame age p50 {} ms, p99 {} ms, from {:?} ({} frames decoded, {} dropped as stale)",
        quantile(0.5),
        quantile(0.99),
        stats.age_from,
        stats.frames,
        stats.dropped
    );

    drop(server);
    let away = Instant::now();
    while away.elapsed() < Duration::from_secs(3) {
        source.feed(&worker).unwrap();
    }
    let worker = Worker::default();
    let _server = Server::start(port, video, &[]);
    let back = Instant::now();
    while worker.first.lock().unwrap().is_none() && back.elapsed() < Duration::from_secs(30) {
        source.feed(&worker).unwrap();
    }
    let first = *worker.first.lock().unwrap();
    let backoff = CameraOptions::default().backoff;
    println!(
        "{width}x{height}: server back after 3 s away -> first frame decided in {} (backoff {:.1} s doubling to {:.0} s, with jitter)",
        first.map_or("(none within 30 s)".to_string(), |t| format!(
            "{:.0} ms",
            ms(t - back)
        )),
        backoff.first.as_secs_f64(),
        backoff.max.as_secs_f64(),
    );
}

fn main() {
    if !server_available() {
        return;
    }
    println!(
        "cameras over RTSP/TCP on 127.0.0.1, 25 frames/s, {} cores; the server (x264) runs beside this process",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for (width, height) in [(640, 352), (1920, 1080)] {
        bench(width, height, &record(width, height));
    }
}
