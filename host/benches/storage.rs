//! Object storage (issue 22), side by side in one run against moto's S3 server on
//! 127.0.0.1 (`tests/s3/serve.py`, in a process of its own):
//! - the dataset check after 1,000 lines were appended to an index of 1,000,000 lines in a
//!   bucket: bytes fetched and time, against the same check on the same index on disk;
//! - fetching and verifying the helmet example's model (3 MB): cold (download, SHA-256,
//!   manifest) and warm (revalidated by its entity tag);
//! - hard examples (50 KB each) uploaded per second by the background uploader.
//!
//! `cargo bench -p sedna --bench storage` (about a minute; skipped, and said so, where
//! moto is missing: `python3 -m pip install 'moto==5.2.6' flask flask-cors`).

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sedna::learn::dataset::DatasetMonitor;
use sedna::pipeline::HardExampleUpload;
use sedna::spec::Format;
use sedna::storage::{Cache, Location, Storage};

// The link that cuts the network is for the tests.
#[allow(dead_code)]
#[path = "../tests/s3/server.rs"]
mod server;
use server::started;

const INDEX_LINES: usize = 1_000_000;
const NEW_LINES: usize = 1_000;
const CHECKS: usize = 7;
const EXAMPLES: usize = 200;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn lines(from: usize, count: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(count * 40);
    for i in from..from + count {
        writeln!(
            out,
            "images/{}.jpg {},{},{},{},{}",
            i % 10,
            i % 7,
            i % 5,
            40 + i % 9,
            50 + i % 11,
            i % 4
        )
        .unwrap();
    }
    out
}

fn at(url: &str) -> Location {
    Location::parse(url).unwrap()
}

fn main() {
    let Some(server) = started(&["data", "models", "labels"]) else {
        return;
    };
    let storage = Arc::new(Storage::new(
        Some(server.credentials(None)),
        Duration::from_secs(10),
    ));
    let dir = tempfile::tempdir().unwrap();

    // The dataset check.
    std::fs::create_dir(dir.path().join("images")).unwrap();
    for i in 0..10 {
        let image = format!("images/{i}.jpg");
        std::fs::write(dir.path().join(&image), b"jpeg").unwrap();
        storage
            .put(&at(&format!("s3://data/{image}")), b"jpeg".to_vec())
            .unwrap();
    }
    let mut text = lines(0, INDEX_LINES);
    let local_index = dir.path().join("index.txt");
    std::fs::write(&local_index, &text).unwrap();
    let remote_index = at("s3://data/index.txt");
    storage.put(&remote_index, text.clone()).unwrap();
    let mut local = DatasetMonitor::new(&local_index, Format::Txt);
    let mut remote = DatasetMonitor::at(
        remote_index.clone(),
        Format::Txt,
        Default::default(),
        storage.clone(),
        dir.path().join("mirror"),
    );
    let started = Instant::now();
    remote.check().unwrap();
    let first = started.elapsed();
    local.check().unwrap();
    let (mut local_ms, mut remote_ms, mut fetched) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..CHECKS {
        let appended = lines(INDEX_LINES + round * NEW_LINES, NEW_LINES);
        text.extend_from_slice(&appended);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&local_index)
            .unwrap()
            .write_all(&appended)
            .unwrap();
        storage.put(&remote_index, text.clone()).unwrap();
        let started = Instant::now();
        assert_eq!(local.check().unwrap().samples.len(), NEW_LINES);
        local_ms.push(started.elapsed().as_secs_f64() * 1e3);
        let before = storage.bytes_fetched();
        let started = Instant::now();
        assert_eq!(remote.check().unwrap().samples.len(), NEW_LINES);
        remote_ms.push(started.elapsed().as_secs_f64() * 1e3);
        fetched.push((storage.bytes_fetched() - before) as f64);
    }
    let appended_bytes = lines(INDEX_LINES, NEW_LINES).len();
    let (local_ms, remote_ms, fetched) = (
        median(&mut local_ms),
        median(&mut remote_ms),
        median(&mut fetched),
    );
    println!(
        "dataset check, {NEW_LINES} new lines on {INDEX_LINES} ({:.1} MB; {CHECKS} checks, medians):",
        text.len() as f64 / 1e6
    );
    println!("  local file:  {local_ms:.2} ms");
    println!(
        "  s3 bucket:   {remote_ms:.2} ms ({:.1}x), {fetched:.0} bytes fetched for {appended_bytes} bytes appended (the first check read all {:.1} MB in {:.2} s)",
        remote_ms / local_ms,
        text.len() as f64 / 1e6,
        first.as_secs_f64()
    );

    // The example model, fetched and verified.
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/helmet-detection/models/base.onnx");
    let location = at("s3://models/helmet/base.onnx");
    let manifest = storage.publish(&model, &location).unwrap();
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for run in 0..5 {
        let cache = Cache::new(dir.path().join(format!("cache-{run}")), 1 << 30);
        let started = Instant::now();
        cache.fetch(&storage, &location).unwrap();
        cold.push(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        cache.fetch(&storage, &location).unwrap();
        warm.push(started.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "model fetch and verify, {:.1} MB (5 runs, medians): cold {:.1} ms, warm (ETag revalidation) {:.2} ms",
        manifest.size as f64 / 1e6,
        median(&mut cold),
        median(&mut warm)
    );

    // Hard examples uploaded in the background.
    let store = dir.path().join("hard_examples");
    std::fs::create_dir(&store).unwrap();
    let image: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
    for i in 0..EXAMPLES {
        std::fs::write(store.join(format!("{i:05}.png")), &image).unwrap();
    }
    let started = Instant::now();
    let upload = HardExampleUpload::start(
        &store,
        "index.jsonl",
        at("s3://labels/job/"),
        storage.clone(),
    )
    .unwrap();
    while upload.stats().uploaded < EXAMPLES as u64 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "hard-example upload: {EXAMPLES} images of 50 KB in {took:.2} s: {:.0} images/s, {:.1} MB/s",
        EXAMPLES as f64 / took,
        (EXAMPLES * image.len()) as f64 / took / 1e6
    );
}
