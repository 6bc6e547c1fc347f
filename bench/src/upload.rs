//! Plugin upload to serving, through the HTTP API over real HTTP on 127.0.0.1, against a
//! job whose worker runs the example's model on frames that keep coming. Each round
//! uploads a HEM never seen before (the built-in IBT with a custom section of its own, so
//! that its sha256 is new and it is compiled afresh), binds it to the job's `hem` slot
//! and waits for the first frame the new HEM decides. Then it binds it again after the
//! in-memory cache is dropped (as after a restart: the precompiled file on disk).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sedna::learn::LocalJob;
use sedna::plugin::{Builtin, PluginStore, Runtime, RuntimeConfig};
use sedna::server::{Service, Token};

use crate::median;

const TOKEN: &str = "a-token-for-the-benchmark";

/// A component with a custom section appended: the same plugin, new bytes.
fn variant(wasm: &[u8], n: usize) -> Vec<u8> {
    let name = b"sedna-bench";
    let payload = format!("variant {n}");
    let size = 1 + name.len() + payload.len();
    assert!(size < 128, "one-byte LEB128 sizes");
    let mut out = wasm.to_vec();
    out.extend([0u8, size as u8, name.len() as u8]);
    out.extend(name);
    out.extend(payload.as_bytes());
    out
}

/// A job on `model` whose worker reads a folder of frames that the bench keeps filling.
fn job_yaml(root: &Path, model: &Path) -> std::path::PathBuf {
    std::fs::copy(model, root.join("base.onnx")).unwrap();
    std::fs::write(root.join("index.txt"), "").unwrap();
    std::fs::create_dir_all(root.join("camera")).unwrap();
    let yaml = format!(
        r#"apiVersion: sedna.io/v1alpha1
kind: Dataset
metadata: {{name: data}}
spec: {{url: "{root}/index.txt", format: txt, nodeName: edge}}
---
apiVersion: sedna.io/v1alpha1
kind: Model
metadata: {{name: base}}
spec: {{url: "{root}/base.onnx", format: onnx}}
---
apiVersion: sedna.io/v1alpha1
kind: IncrementalLearningJob
metadata: {{name: bench}}
spec:
  initialModel: {{name: base}}
  dataset: {{name: data, trainProb: 0.8}}
  trainSpec:
    template: {{spec: {{containers: [{{name: train, image: ignored}}]}}}}
    trigger:
      condition: {{operator: ">", threshold: 1000000, metric: num_of_samples}}
  evalSpec:
    template: {{spec: {{containers: [{{name: eval, image: ignored}}]}}}}
  deploySpec:
    model: {{name: base, hotUpdateEnabled: true}}
    trigger:
      condition: {{operator: ">", threshold: 0.1, metric: "map_delta"}}
    hardExampleMining: {{name: EdgeOnly}}
    template: {{spec: {{containers: [{{name: infer, image: ignored, env: [{{name: video_url, value: "{root}/camera"}}]}}]}}}}
  outputDir: "{root}/out"
"#,
        root = root.display()
    );
    let path = root.join("job.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn put(url: &str, body: &[u8]) -> serde_json::Value {
    let mut response = agent()
        .put(url)
        .header("Authorization", format!("Bearer {TOKEN}"))
        .send(body)
        .unwrap();
    let status = response.status();
    let text = response.body_mut().read_to_string().unwrap();
    assert!(status.is_success(), "{url}: {status} {text}");
    serde_json::from_str(&text).unwrap()
}

/// Medians over `rounds` uploads, in milliseconds.
pub struct Upload {
    pub wasm_kib: usize,
    pub upload: f64,
    pub bind: f64,
    pub to_first_frame: f64,
    pub bind_from_disk: f64,
    pub frames: u64,
    pub failed: u64,
}

/// Uploads and binds a new HEM `rounds` times while the worker runs `model` on copies
/// of `frame`.
pub fn measure(model: &Path, frame: &Path, rounds: usize) -> Upload {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let yaml = job_yaml(root, model);
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(root.join("home/cache")),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let store = PluginStore::open(&root.join("home")).unwrap();
    let resources = sedna::spec::load(&[yaml]).unwrap();
    let mut job = LocalJob::open(&resources, None, &runtime, &store).unwrap();
    let handle = job.handle();
    let worker = handle.worker.clone().unwrap();
    let (_, mut source) = job.take_feed().unwrap();
    std::fs::write(root.join("token"), TOKEN).unwrap();
    let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
    std::fs::set_permissions(root.join("token"), private).unwrap();
    let service = Service::new(
        runtime.clone(),
        PluginStore::open(&root.join("home")).unwrap(),
        Token::read(&root.join("token")).unwrap(),
        vec![handle],
    );
    let addr: SocketAddr = service.start("127.0.0.1:0".parse().unwrap(), None).unwrap();
    let base = format!("http://{addr}");

    // Frames flow all along: a new one every 2 ms after the last, fed as it comes.
    let camera = root.join("camera");
    let frame = frame.to_path_buf();
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = std::thread::spawn({
        let (worker, stop) = (worker.clone(), stop.clone());
        move || {
            for n in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                std::fs::copy(&frame, camera.join(format!("{n:09}.png"))).unwrap();
                source.feed(&worker).unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    });

    let ibt = Builtin::find("IBT").unwrap().wasm;
    let (mut uploads, mut binds, mut to_first_frame, mut from_disk) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let wasm = variant(ibt, round);
        let started = Instant::now();
        put(&format!("{base}/v1/plugins/bench-hem/{round}"), &wasm);
        let uploaded = Instant::now();
        let bind = format!(r#"{{"plugin": "bench-hem@{round}", "params": {{}}}}"#);
        put(&format!("{base}/v1/jobs/bench/slots/hem"), bind.as_bytes());
        let bound = Instant::now();
        // The first frame decided by the new HEM: one counted after the bind returned.
        let frames = worker.stats.frames.get();
        while worker.stats.frames.get() == frames {
            std::thread::sleep(Duration::from_micros(100));
        }
        let served = Instant::now();
        assert_eq!(worker.hem().name(), format!("bench-hem@{round}"));
        uploads.push((uploaded - started).as_secs_f64() * 1e3);
        binds.push((bound - uploaded).as_secs_f64() * 1e3);
        to_first_frame.push((served - uploaded).as_secs_f64() * 1e3);

        // As after a restart: only the precompiled file on disk.
        runtime.cache().forget_memory();
        let started = Instant::now();
        put(&format!("{base}/v1/jobs/bench/slots/hem"), bind.as_bytes());
        from_disk.push(started.elapsed().as_secs_f64() * 1e3);
    }
    stop.store(true, Ordering::Relaxed);
    feeder.join().unwrap();
    Upload {
        wasm_kib: ibt.len() / 1024,
        upload: median(&mut uploads),
        bind: median(&mut binds),
        to_first_frame: median(&mut to_first_frame),
        bind_from_disk: median(&mut from_disk),
        frames: worker.stats.frames.get(),
        failed: worker.stats.failed.get(),
    }
}
