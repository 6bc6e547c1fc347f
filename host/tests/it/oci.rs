//! Plugins through a real OCI registry: Debian's `docker-registry` (the CNCF distribution
//! server) started on 127.0.0.1 for each test. Push, pull, a job naming its HEM by digest,
//! and what is refused: a tampered blob, an unsigned or wrongly signed plugin when the
//! host trusts a key.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::support::FIXTURE_HEM_HOSTILE;
use crate::support::job::{Job, TRAIN_ENV, text};

const REGISTRY: &str = "/usr/bin/docker-registry";

/// A registry serving from a directory of its own; killed when dropped.
struct Registry {
    child: Child,
    root: tempfile::TempDir,
    address: String,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// A started registry, or `None` (a skip, said why) where it is not installed; in CI,
    /// where `.ci/run` installs it, a failure.
    fn start() -> Option<Self> {
        if !Path::new(REGISTRY).exists() {
            let missing =
                "Debian's docker-registry is not installed: run `apt-get install docker-registry`";
            assert!(std::env::var_os("CI").is_none(), "{missing}");
            eprintln!("skipped: {missing}");
            return None;
        }
        let root = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let config = root.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: error}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\nhttp:\n  addr: {address}\n",
                root.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(REGISTRY)
            .args(["serve", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let registry = Registry {
            child,
            root,
            address,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&registry.address).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(registry)
    }

    fn reference(&self, repository_and_tag: &str) -> String {
        format!("oci://{}/{repository_and_tag}", self.address)
    }

    /// Where the registry keeps the blob of `digest` (hex).
    fn blob(&self, digest: &str) -> PathBuf {
        self.root
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&digest[..2])
            .join(digest)
            .join("data")
    }
}

/// `sedna` with `job`'s data directory; stdout, or a panic with stderr.
fn ok(job: &Job, args: &[&str]) -> String {
    let out = job.sedna(args);
    assert!(
        out.status.success(),
        "sedna {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `sedna` that must fail; its stderr.
fn refused(job: &Job, args: &[&str]) -> String {
    let out = job.sedna(args);
    assert!(
        !out.status.success(),
        "sedna {args:?} succeeded: {}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

/// The pinned reference a push printed.
fn pinned(pushed: &str) -> String {
    pushed
        .split("pinned: ")
        .nth(1)
        .expect("the push prints its pinned reference")
        .trim()
        .to_string()
}

#[test]
fn a_signed_plugin_goes_through_a_registry_and_a_job_names_it_by_digest() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let publisher = Job::new(TRAIN_ENV, "accuracy_delta");
    let key = publisher.root().join("release-key");
    let keygen = ok(&publisher, &["plugin", "keygen", key.to_str().unwrap()]);
    assert!(keygen.contains("release-key.pub"), "{keygen}");
    let tag = registry.reference("hems/always-hard:1");
    let pushed = ok(
        &publisher,
        &[
            "plugin",
            "push",
            FIXTURE_HEM_HOSTILE,
            &tag,
            "--sign-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(
        pushed.contains("hard-example-miner") && pushed.contains("signed"),
        "{pushed}"
    );
    let pinned = pinned(&pushed);
    assert!(pinned.contains("hems/always-hard@sha256:"), "{pinned}");

    // An edge host that trusts the key pulls it by tag into its store...
    let mut job = Job::new(TRAIN_ENV, "accuracy_delta");
    ok(
        &job,
        &["plugin", "trust", &format!("{}.pub", key.display())],
    );
    let pulled = ok(&job, &["plugin", "pull", &tag]);
    assert!(
        pulled.contains("as always-hard@1 (hard-example-miner"),
        "{pulled}"
    );
    assert!(ok(&job, &["plugin", "list"]).contains("always-hard"));

    // ...and a job names it by digest: every frame of a pass is hard, as it answers.
    let video = job.record_video(10);
    job.inference_env(&[("video_url", &video.display().to_string())]);
    job.edit(
        "hardExampleMining: {name: IBT}",
        &format!("hardExampleMining: {{name: \"{pinned}\", parameters: [{{key: answer, value: \"true\"}}]}}"),
    );
    job.append(4, "");
    ok(&job, &["run", job.yaml.to_str().unwrap(), "--once"]);
    let results = std::fs::read_to_string(job.root().join("out/inference/results.jsonl")).unwrap();
    assert_eq!(results.lines().count(), 10, "{results}");
    assert!(
        results.lines().all(|l| l.contains("\"hard\":true")),
        "{results}"
    );

    // Pinned by digest, it was pulled once: the job starts again with the registry gone.
    drop(registry);
    ok(&job, &["run", job.yaml.to_str().unwrap(), "--once"]);
}

#[test]
fn a_tampered_blob_an_unsigned_and_a_wrongly_signed_plugin_are_refused() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let publisher = Job::new(TRAIN_ENV, "accuracy_delta");
    let (key, other) = (publisher.root().join("key"), publisher.root().join("other"));
    ok(&publisher, &["plugin", "keygen", key.to_str().unwrap()]);
    ok(&publisher, &["plugin", "keygen", other.to_str().unwrap()]);
    let signed = registry.reference("hems/mine:signed");
    let unsigned = registry.reference("hems/mine:unsigned");
    ok(
        &publisher,
        &[
            "plugin",
            "push",
            FIXTURE_HEM_HOSTILE,
            &signed,
            "--sign-key",
            key.to_str().unwrap(),
        ],
    );
    ok(
        &publisher,
        &["plugin", "push", FIXTURE_HEM_HOSTILE, &unsigned],
    );

    // A host trusting another key takes neither.
    let strict = Job::new(TRAIN_ENV, "accuracy_delta");
    ok(
        &strict,
        &["plugin", "trust", &format!("{}.pub", other.display())],
    );
    let err = refused(&strict, &["plugin", "pull", &signed]);
    assert!(err.contains("signed by no key this host trusts"), "{err}");
    let err = refused(&strict, &["plugin", "pull", &unsigned]);
    assert!(
        err.contains("unsigned") && err.contains("--sign-key"),
        "{err}"
    );
    let stored: serde_json::Value =
        serde_json::from_str(&ok(&strict, &["plugin", "list", "--json"])).unwrap();
    assert!(
        stored
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["name"] != "mine"),
        "{stored}"
    );

    // A host trusting no key takes the unsigned one; a digest the registry does not have
    // is named.
    let open = Job::new(TRAIN_ENV, "accuracy_delta");
    ok(&open, &["plugin", "pull", &unsigned]);
    let missing = registry.reference(&format!("hems/mine@sha256:{}", "0".repeat(64)));
    let err = refused(&open, &["plugin", "pull", &missing]);
    assert!(err.contains("no such repository, tag or digest"), "{err}");

    // The component's blob changed in the registry: refused by its digest.
    let wasm = std::fs::read(FIXTURE_HEM_HOSTILE).unwrap();
    let blob = registry.blob(&hex::encode(Sha256::digest(&wasm)));
    let mut tampered = wasm.clone();
    tampered[wasm.len() / 2] ^= 0xff;
    std::fs::write(&blob, &tampered).unwrap();
    let fresh = Job::new(TRAIN_ENV, "accuracy_delta");
    let err = refused(&fresh, &["plugin", "pull", &unsigned, "--name", "again"]);
    assert!(
        err.contains("came back as") && err.contains("refused"),
        "{err}"
    );

    // A blob longer than announced is not read past its size.
    tampered.extend(vec![0u8; 1 << 20]);
    std::fs::write(&blob, &tampered).unwrap();
    let err = refused(&fresh, &["plugin", "pull", &unsigned, "--name", "longer"]);
    assert!(err.contains(&format!("over {} bytes", wasm.len())), "{err}");
}
