//! Models and data in object storage, against a real S3 server: moto's
//! (`tests/s3/serve.py`, checking signatures) on 127.0.0.1. Without moto installed a test
//! here says how to install it and passes, except in CI (`CI` set), where `.ci/run`
//! installs it and its absence fails.

use std::sync::Arc;
use std::time::Duration;

use sedna::learn::DeployedModel;
use sedna::learn::dataset::DatasetMonitor;
use sedna::pipeline::HardExampleUpload;
use sedna::spec::Format;
use sedna::storage::{Cache, Location, MANIFEST_SUFFIX, Storage};

use crate::support::job::{Job, TRAIN_ENV, text};

use crate::support::s3::{Link, S3Server, started};

fn storage(server: &S3Server, secret: Option<&str>) -> Storage {
    Storage::new(Some(server.credentials(secret)), Duration::from_secs(2))
}

/// Reaching `server` through a [`Link`] (cut, throttled or truncated by the test), with
/// requests retried for `retry`.
fn linked(server: &S3Server, retry: Duration) -> (Link, Arc<Storage>) {
    let link = Link::to(server);
    let storage = Storage::new(Some(server.credentials_via(&link)), retry);
    (link, Arc::new(storage))
}

fn at(url: &str) -> Location {
    Location::parse(url).unwrap()
}

#[test]
fn a_published_model_is_fetched_verified_and_revalidated_from_the_cache() {
    let Some(server) = started(&["models"]) else {
        return;
    };
    let storage = storage(&server, None);
    let dir = tempfile::tempdir().unwrap();
    let model: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let file = dir.path().join("model.onnx");
    std::fs::write(&file, &model).unwrap();
    let deployed = at("s3://models/helmet/deployed.onnx");
    let manifest = storage.publish(&file, &deployed).unwrap();
    assert_eq!(manifest.size, 200_000);

    let cache = Cache::new(dir.path().join("cache"), 1 << 30);
    let fetched = cache.fetch(&storage, &deployed).unwrap();
    assert_eq!(std::fs::read(&fetched).unwrap(), model);
    let before = storage.bytes_fetched();
    assert_eq!(cache.fetch(&storage, &deployed).unwrap(), fetched);
    let again = storage.bytes_fetched() - before;
    assert!(
        again < 1_000,
        "revalidated, not fetched again: {again} bytes"
    );

    // Caught between the object and its manifest: refused until the manifest follows.
    storage.put(&deployed, b"half a model".to_vec()).unwrap();
    let error = cache.fetch(&storage, &deployed).unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(
        error.to_string().contains("does not match its manifest"),
        "{error}"
    );
    std::fs::write(&file, b"the next model").unwrap();
    storage.publish(&file, &deployed).unwrap();
    let fetched = cache.fetch(&storage, &deployed).unwrap();
    assert_eq!(std::fs::read(&fetched).unwrap(), b"the next model");

    // Out of reach: the copy fetched before serves a (re)start.
    let link_server = S3Server::start(&["models"]);
    let (link, linked) = self::linked(&link_server, Duration::from_millis(300));
    let elsewhere = at("s3://models/elsewhere.onnx");
    linked.publish(&file, &elsewhere).unwrap();
    let first = cache.fetch(&linked, &elsewhere).unwrap();
    link.cut();
    assert!(cache.fetch(&linked, &elsewhere).unwrap_err().is_transient());
    assert_eq!(cache.fetch_or_cached(&linked, &elsewhere).unwrap(), first);
    let never = at("s3://models/never-fetched.onnx");
    assert!(cache.fetch_or_cached(&linked, &never).is_err());

    // A bad manifest is named.
    storage
        .put(&deployed.with_suffix(MANIFEST_SUFFIX), b"{".to_vec())
        .unwrap();
    let error = cache.fetch(&storage, &deployed).unwrap_err().to_string();
    assert!(error.contains("not a model manifest"), "{error}");
    // A huge one is read no further than a manifest could be.
    storage
        .put(&deployed.with_suffix(MANIFEST_SUFFIX), vec![b' '; 5 << 20])
        .unwrap();
    let before = storage.bytes_fetched();
    let error = cache.fetch(&storage, &deployed).unwrap_err().to_string();
    assert!(error.contains("not a model manifest"), "{error}");
    assert!(storage.bytes_fetched() - before < 64 << 10);
}

#[test]
fn the_cache_keeps_to_its_bound_dropping_the_least_recently_used() {
    let Some(server) = started(&["models"]) else {
        return;
    };
    let storage = storage(&server, None);
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path().join("cache"), 250_000);
    let mut files = Vec::new();
    for name in ["a", "b", "c"] {
        let location = at(&format!("s3://models/{name}.onnx"));
        storage.put(&location, vec![7; 100_000]).unwrap();
        files.push(cache.fetch(&storage, &location).unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!files[0].exists(), "the oldest went");
    assert!(files[1].exists() && files[2].exists());
}

#[test]
fn wrong_credentials_a_missing_bucket_or_key_and_a_down_endpoint_are_clear_errors() {
    let Some(server) = started(&["models"]) else {
        return;
    };
    let good = storage(&server, None);
    good.put(&at("s3://models/m.onnx"), b"model".to_vec())
        .unwrap();

    let wrong = storage(&server, Some("not-the-secret"));
    let error = wrong.head(&at("s3://models/m.onnx")).unwrap_err();
    let text = error.to_string();
    assert!(!error.is_transient(), "{text}");
    assert!(
        text.contains("access denied with the credentials from the test's variables")
            && text.contains("SECRET_ACCESS_KEY"),
        "{text}"
    );
    assert!(!text.contains("not-the-secret"), "the secret never prints");

    let text = good
        .read(&at("s3://no-such-bucket/m.onnx"), 0, None)
        .unwrap_err()
        .to_string();
    assert!(text.contains("the bucket does not exist"), "{text}");
    let text = good
        .read(&at("s3://models/missing.onnx"), 0, None)
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("s3://models/missing.onnx: no such object"),
        "{text}"
    );

    let port = server.port;
    drop(server);
    let down = Storage::new(
        Some(S3Server::credentials_for(port)),
        Duration::from_millis(500),
    );
    let error = down.head(&at("s3://models/m.onnx")).unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(error.to_string().contains("it is retried"), "{error}");
}

#[test]
fn an_index_in_a_bucket_is_read_incrementally_by_ranges() {
    let Some(server) = started(&["data"]) else {
        return;
    };
    let storage = Arc::new(storage(&server, None));
    let image = vec![1u8; 1_000];
    storage
        .put(&at("s3://data/set/images/a.jpg"), image.clone())
        .unwrap();
    let index = at("s3://data/set/index.txt");
    // 2,000 lines (about 50 KB) that name one image.
    let mut text = String::from("# helmets\n");
    for i in 0..2_000 {
        text.push_str(&format!("images/a.jpg {i},1,{},9,0\n", i + 5));
    }
    storage.put(&index, text.clone().into_bytes()).unwrap();
    let mirror = tempfile::tempdir().unwrap();
    let mut monitor = DatasetMonitor::at(
        index.clone(),
        Format::Txt,
        Default::default(),
        storage.clone(),
        mirror.path().to_path_buf(),
    );
    let check = monitor.check().unwrap();
    assert_eq!(check.samples.len(), 2_000);
    let local = &check.samples[0].image;
    assert!(local.starts_with(mirror.path()), "{}", local.display());
    assert_eq!(std::fs::read(local).unwrap(), image);

    // Ten lines appended (the object written again, as S3 has no append), one of them
    // naming an image that is not there, and half a line still being written.
    let appended = "images/a.jpg 1,1,5,5,1\n".repeat(9) + "images/gone.jpg 1,1,5,5,0\nimages/a.jp";
    text.push_str(&appended);
    storage.put(&index, text.clone().into_bytes()).unwrap();
    let before = storage.bytes_fetched();
    let check = monitor.check().unwrap();
    let fetched = storage.bytes_fetched() - before;
    assert_eq!(check.samples.len(), 9);
    assert_eq!(check.rejected.len(), 1);
    assert!(
        check.rejected[0]
            .reason
            .contains("images/gone.jpg: no such object"),
        "{:?}",
        check.rejected
    );
    assert!(!check.rescanned);
    assert!(
        fetched <= 4_096 + appended.len() as u64,
        "the check read {fetched} bytes of a {} byte index",
        text.len()
    );

    // Replaced by another index: read again from its start.
    storage
        .put(&index, b"images/a.jpg 1,1,5,5,0\n".to_vec())
        .unwrap();
    let check = monitor.check().unwrap();
    assert!(check.rescanned);
    assert_eq!(check.samples.len(), 1);
}

#[test]
fn a_job_with_its_models_and_data_in_a_bucket_trains_and_deploys_there() {
    let Some(server) = started(&["models", "data"]) else {
        return;
    };
    let storage = storage(&server, None);
    let mut job = Job::new(TRAIN_ENV, "accuracy_delta");
    let root = job.root().to_path_buf();
    job.append(32, "");
    job.move_to_buckets(&server, None, false);
    let yaml = job.yaml.to_str().unwrap().to_string();

    let wrong = job.sedna_with(&["run", &yaml, "--once"], &server.vars(Some("wrong")));
    assert!(!wrong.status.success());
    let stderr = text(&wrong.stderr);
    assert!(
        stderr.contains(
            "s3://models/base.onnx: access denied with the credentials from the environment"
        ),
        "{stderr}"
    );

    let out = job.sedna_with(&["run", &yaml, "--once"], &server.vars(None));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("round 1: deployed"),
        "{}",
        text(&out.stdout)
    );
    let trained = std::fs::read(root.join("out/train/1/model.onnx")).unwrap();
    let (deployed, _) = storage
        .read(&at("s3://models/deployed.onnx"), 0, None)
        .unwrap();
    assert_eq!(
        deployed.as_ref(),
        trained.as_slice(),
        "the deployed model is the trained one"
    );
    let (manifest, _) = storage
        .manifest(&at("s3://models/deployed.onnx"))
        .unwrap()
        .expect("published with its manifest");
    assert_eq!(manifest.size, trained.len() as u64);
    assert!(
        root.join("out/objects/s3/data/colours").is_dir(),
        "the images were mirrored"
    );
}

#[test]
fn a_deploy_model_in_a_bucket_is_noticed_only_once_whole_and_verified() {
    let Some(server) = started(&["models"]) else {
        return;
    };
    let storage = Arc::new(storage(&server, None));
    let dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(Cache::new(dir.path().join("cache"), 1 << 30));
    let location = at("s3://models/deployed.onnx");
    let mut watch = DeployedModel::new(location.clone(), storage.clone(), cache.clone());
    assert_eq!(watch.changed().unwrap(), None, "nothing there yet");

    let file = dir.path().join("round-1.onnx");
    std::fs::write(&file, b"model of round 1").unwrap();
    let mut publisher = DeployedModel::new(location.clone(), storage.clone(), cache.clone());
    publisher.publish(&file).unwrap();
    assert_eq!(
        publisher.changed().unwrap(),
        None,
        "its own model is no change"
    );
    let swapped = watch.changed().unwrap().expect("a new model");
    assert_eq!(std::fs::read(&swapped).unwrap(), b"model of round 1");
    assert_eq!(watch.changed().unwrap(), None, "once");

    // Someone writes the object but not (yet) its manifest: never handed to the worker.
    storage.put(&location, b"half a mod".to_vec()).unwrap();
    let error = watch.changed().unwrap_err();
    assert!(error.is_transient(), "{error}");
    std::fs::write(&file, b"model of round 2").unwrap();
    publisher.publish(&file).unwrap();
    let swapped = watch.changed().unwrap().expect("the whole model, now");
    assert_eq!(std::fs::read(&swapped).unwrap(), b"model of round 2");

    // The storage goes away: an error to log, and the worker keeps what it has.
    drop(server);
    let error = watch.changed().unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert_eq!(std::fs::read(&swapped).unwrap(), b"model of round 2");
}

/// Waits up to 20 s for `done`.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(20), "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn hard_examples_upload_in_the_background_and_wait_out_a_network_outage() {
    let Some(server) = started(&["labels"]) else {
        return;
    };
    let (link, storage) = linked(&server, Duration::from_millis(500));
    let reader = self::storage(&server, None);
    let exists = |name: &str| reader.head(&at(&format!("s3://labels/job/{name}"))).is_ok();
    let dir = tempfile::tempdir().unwrap();
    let keep = |name: &str| {
        std::fs::write(dir.path().join(format!("{name}.png")), name).unwrap();
        let line = format!("{{\"image\":\"{name}.png\"}}\n");
        let index = dir.path().join("index.jsonl");
        let mut text = std::fs::read_to_string(&index).unwrap_or_default();
        text.push_str(&line);
        std::fs::write(&index, text).unwrap();
    };
    keep("a");
    let upload = HardExampleUpload::start(
        dir.path(),
        "index.jsonl",
        at("s3://labels/job/"),
        storage.clone(),
    )
    .unwrap();
    eventually("a.png is uploaded", || {
        exists("a.png") && exists("index.jsonl")
    });

    link.cut();
    keep("b");
    keep("c");
    upload.wake();
    eventually("b and c wait", || upload.stats().pending == 2);
    assert!(!exists("b.png"));
    assert!(dir.path().join("b.png").is_file(), "kept locally meanwhile");

    link.restore();
    upload.wake();
    eventually("b and c follow", || exists("b.png") && exists("c.png"));
    let index_lines = || {
        let (index, _) = reader
            .read(&at("s3://labels/job/index.jsonl"), 0, None)
            .unwrap();
        index
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count()
    };
    eventually("the index follows its images", || index_lines() == 3);
    assert_eq!(upload.stats().uploaded, 3);
    drop(upload);

    // A restart uploads only what is new.
    keep("d");
    let upload = HardExampleUpload::start(
        dir.path(),
        "index.jsonl",
        at("s3://labels/job/"),
        storage.clone(),
    )
    .unwrap();
    // The index goes after the pass's images, so once it names d the pass is counted.
    eventually("d is uploaded, then the index", || {
        exists("d.png") && index_lines() == 4
    });
    assert_eq!(upload.stats().uploaded, 1, "only d");
}

#[test]
fn an_index_check_during_an_outage_fails_and_the_next_one_reads_everything() {
    let Some(server) = started(&["data"]) else {
        return;
    };
    let (link, storage) = linked(&server, Duration::from_millis(500));
    let writer = self::storage(&server, None);
    writer
        .put(&at("s3://data/images/a.jpg"), vec![1; 10])
        .unwrap();
    let index = at("s3://data/index.txt");
    writer
        .put(&index, b"images/a.jpg 1,1,5,5,0\n".to_vec())
        .unwrap();
    let mirror = tempfile::tempdir().unwrap();
    let mut monitor = DatasetMonitor::at(
        index.clone(),
        Format::Txt,
        Default::default(),
        storage,
        mirror.path().to_path_buf(),
    );
    assert_eq!(monitor.check().unwrap().samples.len(), 1);
    writer
        .put(
            &index,
            b"images/a.jpg 1,1,5,5,0\nimages/b.jpg 1,1,5,5,0\n".to_vec(),
        )
        .unwrap();
    writer
        .put(&at("s3://data/images/b.jpg"), vec![2; 10])
        .unwrap();
    link.cut();
    let cursor = monitor.cursor().clone();
    let error = monitor.check().unwrap_err();
    assert!(error.to_string().contains("it is retried"), "{error}");
    assert_eq!(monitor.cursor(), &cursor, "nothing counted");
    link.restore();
    let check = monitor.check().unwrap();
    assert_eq!(check.samples.len(), 1, "the new line, once");
    assert_eq!(check.samples[0].line, 2);
}

#[test]
fn a_round_waits_out_a_storage_outage_and_deploys_the_whole_model() {
    let Some(server) = started(&["models", "data"]) else {
        return;
    };
    let link = Arc::new(Link::to(&server));
    let storage = storage(&server, None);
    let mut job = Job::new(TRAIN_ENV, "accuracy_delta");
    let root = job.root().to_path_buf();
    job.append(32, "");
    // The credentials in a Secret beside the job, as a cluster holds them.
    job.move_to_buckets(&server, Some(link.port), false);
    let resources = sedna::spec::load(std::slice::from_ref(&job.yaml)).unwrap();
    let store = sedna::plugin::PluginStore::open(&root.join("home")).unwrap();
    let mut local =
        sedna::learn::LocalJob::open(&resources, None, crate::support::runtime(), &store).unwrap();
    // The network drops as the round deploys, for two seconds.
    local.on_stage({
        let link = link.clone();
        move |_, stage| {
            if stage == sedna::spec::Stage::Deploy {
                link.cut();
                let link = link.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_secs(2));
                    link.restore();
                });
            }
        }
    });
    let started = std::time::Instant::now();
    let checked = local.check(sedna::spec::ClockTime::now()).unwrap();
    assert!(
        format!("{checked:?}").contains("deployed: true"),
        "{checked:?}"
    );
    assert!(started.elapsed() > Duration::from_secs(2));
    let trained = std::fs::read(root.join("out/train/1/model.onnx")).unwrap();
    let (deployed, _) = storage
        .read(&at("s3://models/deployed.onnx"), 0, None)
        .unwrap();
    assert_eq!(deployed.as_ref(), trained.as_slice());
    assert_eq!(
        storage
            .manifest(&at("s3://models/deployed.onnx"))
            .unwrap()
            .unwrap()
            .0
            .size,
        trained.len() as u64
    );
}

#[test]
fn a_model_is_fetched_from_a_web_server_which_is_read_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.onnx"), b"a model on the web").unwrap();
    let mut child = std::process::Command::new("python3")
        .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
    let port = line
        .split("port ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap();
    let storage = Storage::new(None, Duration::from_secs(2));
    let cache = Cache::new(dir.path().join("cache"), 1 << 20);
    let model = at(&format!("http://127.0.0.1:{port}/model.onnx"));
    let fetched = cache.fetch(&storage, &model);
    let missing = cache.fetch(&storage, &at(&format!("http://127.0.0.1:{port}/gone.onnx")));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        std::fs::read(fetched.unwrap()).unwrap(),
        b"a model on the web"
    );
    let text = missing.unwrap_err().to_string();
    assert!(text.contains("gone.onnx: no such object"), "{text}");
    let text = storage.put(&model, b"x".to_vec()).unwrap_err().to_string();
    assert!(text.contains("read only"), "{text}");
}

#[test]
fn a_throttled_or_truncated_download_is_retried_and_never_cached_short() {
    let Some(server) = started(&["models"]) else {
        return;
    };
    let (link, storage) = linked(&server, Duration::from_secs(10));
    let dir = tempfile::tempdir().unwrap();
    let model: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    let file = dir.path().join("model.onnx");
    std::fs::write(&file, &model).unwrap();
    let location = at("s3://models/m.onnx");
    storage.publish(&file, &location).unwrap();

    // Three 503s, as a throttled S3 answers: retried with backoff, then fetched.
    link.throttle(3);
    let cache = Cache::new(dir.path().join("cache"), 1 << 30);
    let fetched = cache.fetch(&storage, &location).unwrap();
    assert_eq!(std::fs::read(&fetched).unwrap(), model);
    assert_eq!(link.faults_left(), (0, false), "the three 503s were served");

    // A response cut after 100 KB: never a short model in the cache.
    let fresh = Cache::new(dir.path().join("fresh"), 1 << 30);
    link.truncate_next(100_000);
    let first = fresh.fetch(&storage, &location);
    assert_eq!(link.faults_left(), (0, false), "the cut was made");
    match first {
        Ok(path) => assert_eq!(std::fs::read(path).unwrap(), model, "retried whole"),
        Err(e) => {
            assert!(e.is_transient(), "{e}");
            let path = fresh.fetch(&storage, &location).unwrap();
            assert_eq!(std::fs::read(path).unwrap(), model);
        }
    }
}
