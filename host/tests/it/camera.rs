//! RTSP cameras against a real server: GStreamer's RTSP server (`tests/rtsp/serve.py`) on
//! 127.0.0.1, streaming a video recorded here with the project's `VideoWriter`, killed,
//! restarted, stalled and guarded by a password as a camera on a network would be.
//!
//! Where the server's packages are missing, a test says which command installs them
//! (`bash host/tests/rtsp/install.sh`) and passes, except in CI (`CI` set), where
//! `.ci/run` installs them and a missing one is a failure.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sedna::media::rtsp::Transport;
use sedna::media::{Frame, InferError};
use sedna::pipeline::camera::{AgeFrom, Backoff, CameraState};
use sedna::pipeline::{CameraOptions, CameraStats, FrameSink, FrameSource, SourceOptions};

#[path = "../rtsp/server.rs"]
mod server;
pub use server::{free_port, server_available};

const WIDTH: u32 = 640;
const HEIGHT: u32 = 352;

/// A 2-second 640x352 video at 25 frames/s: moving bars, so that frames differ.
fn video() -> &'static Path {
    static VIDEO: OnceLock<PathBuf> = OnceLock::new();
    VIDEO.get_or_init(|| {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("camera-bars.mp4");
        let mut writer = sedna::media::VideoWriter::create(&path, WIDTH, HEIGHT, 25).unwrap();
        for n in 0..50u32 {
            let image = image::RgbImage::from_fn(WIDTH, HEIGHT, |x, y| {
                let band = ((x + 8 * n) / 40) % 4;
                image::Rgb([(band * 60) as u8, (y / 2) as u8, 200 - (band * 40) as u8])
            });
            writer.write(&image).unwrap();
        }
        writer.finish().unwrap();
        path
    })
}

/// The test server streaming [`video`].
pub struct Server {
    _running: server::Server,
}

impl Server {
    pub fn start(port: u16, extra: &[&str]) -> Server {
        let _running = server::Server::start(port, video(), extra);
        Server { _running }
    }
}

/// The names of the frames the worker would have run; each must be a whole decoded frame.
#[derive(Default)]
struct Seen(Mutex<Vec<String>>);

impl FrameSink for Seen {
    fn frame(&self, name: &str, frame: Result<Frame, InferError>, _read: Duration) {
        let frame = frame.unwrap_or_else(|e| panic!("{name}: {e}"));
        let size = (frame.pixels().width(), frame.pixels().height());
        assert_eq!(size, (WIDTH, HEIGHT), "{name}");
        self.0.lock().unwrap().push(name.to_string());
    }
}

impl Seen {
    fn names(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// A camera on `url` with quick reconnects and stall detection, as a test wants them.
fn camera(url: &str) -> FrameSource {
    paced_camera(url, None)
}

fn paced_camera(url: &str, max_fps: Option<f64>) -> FrameSource {
    let options = SourceOptions {
        camera: CameraOptions {
            transport: Transport::Tcp,
            stall: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(5),
            backoff: Backoff {
                first: Duration::from_millis(200),
                max: Duration::from_secs(1),
            },
            max_fps,
            attempts: None,
        },
        ..SourceOptions::default()
    };
    FrameSource::open(url, &options).unwrap()
}

/// The first camera's stats.
fn stats(source: &FrameSource) -> CameraStats {
    match source {
        FrameSource::Cameras(cameras) => cameras.stats().remove(0),
        _ => panic!("not a camera"),
    }
}

/// Feeds `sink` until `done` holds (checked after each pass) or `limit` passes.
fn feed_until(
    source: &mut FrameSource,
    sink: &Seen,
    limit: Duration,
    done: impl Fn(&Seen, &CameraStats) -> bool,
) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        source.feed(sink).unwrap();
        if done(sink, &stats(source)) {
            return true;
        }
    }
    false
}

fn url(port: u16) -> String {
    format!("rtsp://127.0.0.1:{port}/cam")
}

#[test]
fn a_camera_streams_decoded_frames_with_names_of_their_own() {
    if !server_available() {
        return;
    }
    let port = free_port();
    let _server = Server::start(port, &[]);
    let mut source = camera(&url(port));
    assert_eq!(source.describe(), format!("the camera {}", url(port)));
    let seen = Seen::default();
    // Frames, and the camera's clock from its RTCP sender reports (the server sends the
    // first within a few seconds): the age runs from capture then.
    let streamed = feed_until(&mut source, &seen, Duration::from_secs(20), |seen, s| {
        seen.names().len() >= 30 && s.age_from == AgeFrom::Capture
    });
    assert!(streamed, "{:?}", stats(&source));
    let names = seen.names();
    assert!(
        names.iter().all(|name| name.starts_with("camera-")),
        "{names:?}"
    );
    assert_eq!(names.iter().collect::<HashSet<_>>().len(), names.len());
    let stats = stats(&source);
    assert_eq!(stats.state, CameraState::Streaming);
    assert!(
        stats.frames >= 30 && stats.last_frame_unix.is_some(),
        "{stats:?}"
    );
    // Capture to decision on one host: under a second, never negative.
    let p50 = stats.age.quantile(0.5).expect("ages");
    assert!(p50 > 0.0 && p50 <= 1.0, "{stats:?}");
}

#[test]
fn a_camera_that_goes_away_is_reconnected_and_its_new_frames_overwrite_none() {
    if !server_available() {
        return;
    }
    let port = free_port();
    let server = Server::start(port, &[]);
    let mut source = camera(&url(port));
    let seen = Seen::default();
    assert!(feed_until(
        &mut source,
        &seen,
        Duration::from_secs(20),
        |seen, _| { seen.names().len() >= 10 }
    ));
    drop(server);
    let lost = feed_until(&mut source, &seen, Duration::from_secs(20), |_, stats| {
        stats.state != CameraState::Streaming && stats.last_error.is_some()
    });
    assert!(lost, "{:?}", stats(&source));
    let before = seen.names().len();
    let _server = Server::start(port, &[]);
    let back = feed_until(&mut source, &seen, Duration::from_secs(20), |seen, _| {
        seen.names().len() >= before + 10
    });
    let stats = stats(&source);
    assert!(back, "{stats:?}");
    assert!(
        stats.reconnects >= 1 && stats.state == CameraState::Streaming,
        "{stats:?}"
    );
    let names = seen.names();
    assert_eq!(names.iter().collect::<HashSet<_>>().len(), names.len());
}

#[test]
fn a_camera_not_there_at_start_is_read_once_it_appears() {
    if !server_available() {
        return;
    }
    let port = free_port();
    let mut source = camera(&url(port));
    let seen = Seen::default();
    source.feed(&seen).unwrap();
    let early = stats(&source);
    assert!(seen.names().is_empty());
    assert_ne!(early.state, CameraState::Streaming);
    let error = early.last_error.unwrap_or_default();
    assert!(error.contains("cannot connect"), "{error}");
    let _server = Server::start(port, &[]);
    assert!(
        feed_until(&mut source, &seen, Duration::from_secs(20), |seen, _| {
            seen.names().len() >= 5
        }),
        "{:?}",
        stats(&source)
    );
}

#[test]
fn a_camera_is_given_up_after_reconnect_attempts_failures_in_a_row() {
    let options = SourceOptions {
        camera: CameraOptions {
            backoff: Backoff {
                first: Duration::from_millis(100),
                max: Duration::from_millis(200),
            },
            attempts: Some(3),
            ..CameraOptions::default()
        },
        ..SourceOptions::default()
    };
    // Nothing listens there.
    let mut source = FrameSource::open(&url(free_port()), &options).unwrap();
    let seen = Seen::default();
    let gave_up = feed_until(&mut source, &seen, Duration::from_secs(20), |_, stats| {
        stats.state == CameraState::GaveUp
    });
    let stats = stats(&source);
    assert!(gave_up, "{stats:?}");
    assert_eq!(stats.reconnects, 2, "{stats:?}");
    let error = stats.last_error.unwrap();
    assert!(
        error.contains("gave up after 3") && error.contains("reconnect_attempts"),
        "{error}"
    );
}

#[test]
fn a_frame_that_does_not_decode_skips_to_the_next_key_frame_and_the_stream_goes_on() {
    if !server_available() {
        return;
    }
    let port = free_port();
    // After a second the server drops every fifth frame that is not a key frame: the
    // frames after it refer to a picture never sent.
    let _server = Server::start(port, &["--drop-after", "1"]);
    let mut source = camera(&url(port));
    let seen = Seen::default();
    let errors_then_frames = std::sync::Mutex::new(None);
    let resumed = feed_until(&mut source, &seen, Duration::from_secs(30), |seen, s| {
        let mut first = errors_then_frames.lock().unwrap();
        if s.decode_errors > 0 && first.is_none() {
            *first = Some((s.decode_errors, seen.names().len()));
        }
        // Two more errors, each skipped to the next key frame, with frames between.
        first.is_some_and(|(errors, frames)| {
            s.decode_errors >= errors + 2 && seen.names().len() >= frames + 5
        })
    });
    let stats = stats(&source);
    assert!(resumed, "{stats:?}");
    assert_eq!(
        stats.state,
        CameraState::Streaming,
        "never reconnected: {stats:?}"
    );
    assert_eq!(stats.reconnects, 0, "{stats:?}");
    // Every frame handed on was whole (the sink checks each one's size), each named once.
    let names = seen.names();
    assert_eq!(names.iter().collect::<HashSet<_>>().len(), names.len());
}

#[test]
fn a_stalled_camera_is_detected_and_reconnected() {
    if !server_available() {
        return;
    }
    let port = free_port();
    // The server keeps the session but sends nothing after a second of each media.
    let _server = Server::start(port, &["--stall-after", "1"]);
    let mut source = camera(&url(port));
    let seen = Seen::default();
    let stalled = feed_until(
        &mut source,
        &seen,
        Duration::from_secs(30),
        |seen, stats| stats.reconnects >= 1 && !seen.names().is_empty(),
    );
    let stats = stats(&source);
    assert!(stalled, "{stats:?}");
    let error = stats.last_error.unwrap_or_default();
    assert!(error.contains("stalled"), "{error}");
}

#[test]
fn wrong_credentials_say_so_and_never_show_the_password() {
    if !server_available() {
        return;
    }
    let port = free_port();
    let _server = Server::start(port, &["--user", "viewer", "--password", "right-one"]);
    let wrong = format!("rtsp://viewer:hunter2@127.0.0.1:{port}/cam");
    let mut source = camera(&wrong);
    let seen = Seen::default();
    let refused = feed_until(&mut source, &seen, Duration::from_secs(20), |_, stats| {
        stats.last_error.is_some()
    });
    let stats = stats(&source);
    assert!(refused, "{stats:?}");
    let error = stats.last_error.clone().unwrap();
    assert!(error.contains("credentials"), "{error}");
    let shown = format!(
        "{} {} {}",
        source.describe(),
        serde_json::to_string(&stats).unwrap(),
        error
    );
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(
        shown.contains(&format!("rtsp://viewer:***@127.0.0.1:{port}/cam")),
        "{shown}"
    );
    assert!(seen.names().is_empty());

    // The right password streams.
    let mut source = camera(&format!("rtsp://viewer:right-one@127.0.0.1:{port}/cam"));
    assert!(
        feed_until(&mut source, &seen, Duration::from_secs(20), |seen, _| {
            seen.names().len() >= 5
        }),
        "{:?}",
        stats
    );
}

#[test]
fn an_h265_camera_is_refused_with_its_codec_named() {
    if !server_available() {
        return;
    }
    let port = free_port();
    let _server = Server::start(port, &["--codec", "h265"]);
    let mut source = camera(&url(port));
    let seen = Seen::default();
    let refused = feed_until(&mut source, &seen, Duration::from_secs(20), |_, stats| {
        stats.last_error.is_some()
    });
    let stats = stats(&source);
    assert!(refused, "{stats:?}");
    let error = stats.last_error.unwrap();
    assert!(error.contains("H265") && error.contains("H.264"), "{error}");
    assert!(seen.names().is_empty());
}

#[test]
fn a_job_reads_its_camera_and_never_prints_the_password() {
    if !server_available() {
        return;
    }
    use crate::support::job::{Job, TRAIN_ENV, text};
    let port = free_port();
    let _server = Server::start(port, &["--user", "viewer", "--password", "s3cret"]);
    let mut job = Job::new(TRAIN_ENV, "accuracy_delta");
    job.inference_env(&[
        (
            "video_url",
            &format!("rtsp://viewer:s3cret@127.0.0.1:{port}/cam"),
        ),
        ("rtsp_transport", "udp"),
        ("stall_seconds", "3"),
    ]);
    job.append(32, "");

    // One pass of a camera is a second of its frames.
    let out = job.run_once();
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the camera rtsp://viewer:***@127.0.0.1:{port}/cam"
        )),
        "{stderr}"
    );
    let results = std::fs::read_to_string(job.root().join("out/inference/results.jsonl")).unwrap();
    assert!(results.lines().count() >= 5, "{results}\n{stderr}");
    assert!(results.contains("\"camera-"), "{results}");
    let status = job.status();
    for shown in [&stderr, &results, &status] {
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    // A bad camera setting is an error naming the field and what to give.
    for (key, value, wanted) in [
        ("rtsp_transport", "quic", "tcp"),
        ("max_fps", "0", "above 0"),
    ] {
        let mut job = Job::new(TRAIN_ENV, "accuracy_delta");
        job.append(32, "");
        let url = format!("rtsp://127.0.0.1:{port}/cam");
        job.inference_env(&[("video_url", &url), (key, value)]);
        let out = job.run_once();
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!("`{key}`")) && stderr.contains(wanted),
            "{stderr}"
        );
    }
}

#[test]
fn max_fps_runs_a_faster_camera_at_that_rate() {
    if !server_available() {
        return;
    }
    let port = free_port();
    let _server = Server::start(port, &[]);
    let mut source = paced_camera(&url(port), Some(5.0));
    let seen = Seen::default();
    assert!(feed_until(
        &mut source,
        &seen,
        Duration::from_secs(20),
        |seen, _| { !seen.names().is_empty() }
    ));
    let (before, start) = (seen.names().len(), Instant::now());
    while start.elapsed() < Duration::from_secs(3) {
        source.feed(&seen).unwrap();
    }
    let ran = seen.names().len() - before;
    let stats = stats(&source);
    // 3 s of a 25 frames/s camera at 5 frames/s: about 15 run, none counted as dropped.
    assert!((12..=18).contains(&ran), "{ran} frames ran: {stats:?}");
    assert!(stats.frames >= 60 && stats.dropped == 0, "{stats:?}");
}
