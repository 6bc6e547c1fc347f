//! The HTTP service of `sedna run --listen`, over real HTTP on 127.0.0.1, against a real
//! running job: plugin upload and binding while frames stream, the checks an upload
//! passes, the token, `/metrics`, and the CLI's `--host` commands.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use crate::support::job::{Job, TRAIN_ENV, text};
use crate::support::{FIXTURE_HEM_HOSTILE, builtin_file, write_private};

const JOB: &str = "colour-job";
/// Frames in the job's video: two seconds at 25 frames a second, played in a loop.
const VIDEO_FRAMES: u64 = 50;

/// `sedna run job.yaml --listen 127.0.0.1:0` on a job whose worker streams a video and
/// whose HEM (`EdgeOnly`) never flags a frame.
struct Host {
    _process: Killed,
    url: String,
    /// The token, when this start printed it.
    printed_token: Option<String>,
    /// The self-signed certificate's fingerprint, when this start made it.
    printed_fingerprint: Option<String>,
    job: Job,
}

impl Host {
    fn start(extra: &[&str]) -> Self {
        let job = Job::new(TRAIN_ENV, "accuracy_delta");
        let video = job.record_video(VIDEO_FRAMES);
        job.inference_env(&[("video_url", &video.display().to_string())]);
        job.edit(
            "hardExampleMining: {name: IBT}",
            "hardExampleMining: {name: EdgeOnly}",
        );
        Host::start_on(job, extra)
    }

    fn start_on(job: Job, extra: &[&str]) -> Self {
        let log = std::fs::File::create(job.root().join("host.log")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sedna"))
            .args(["run", job.yaml.to_str().unwrap()])
            .args(extra)
            .args(["--listen", "127.0.0.1:0"])
            .env("SEDNA_HOME", job.root().join("home"))
            .env("SEDNA_LOG", "sedna=info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let lines = stdout_lines(&mut child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut printed_token, mut printed_fingerprint) = (None, None);
        loop {
            let line = lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("the host did not start: {}", host_log(&job)));
            if let Some((_, token)) = line.split_once("mode 0600): ") {
                printed_token = Some(token.to_string());
            }
            if let Some((_, fingerprint)) = line.split_once("SHA-256 fingerprint ") {
                printed_fingerprint = Some(fingerprint.to_string());
            }
            if let Some(url) = line.strip_prefix("serving the API on ") {
                return Host {
                    _process: Killed(child),
                    url: url.to_string(),
                    printed_token,
                    printed_fingerprint,
                    job,
                };
            }
        }
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.job.root().join("home/token"))
            .unwrap()
            .trim()
            .to_string()
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into()
    }

    /// `(status, body)` of a call, with `token` as its bearer token if given.
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> (u16, serde_json::Value) {
        let url = format!("{}{path}", self.url);
        let agent = Host::agent();
        let auth = token.map(|t| format!("Bearer {t}")).unwrap_or_default();
        let response = match method {
            "GET" => agent.get(&url).header("Authorization", &auth).call(),
            "DELETE" => agent.delete(&url).header("Authorization", &auth).call(),
            "PUT" => agent
                .put(&url)
                .header("Authorization", &auth)
                .header("Expect", "100-continue")
                .send(body),
            _ => unreachable!(),
        };
        let mut response = response.unwrap();
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap();
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        (status, json)
    }

    fn get(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.call("GET", path, None, b"");
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// `sedna plugin push` of the hostile HEM as `name` (at `version`, else `latest`),
    /// bound to the job's `hem` slot with `answer`.
    fn push_hem(&self, name: &str, version: Option<&str>, answer: &str) -> std::process::Output {
        let (bind, answer) = (format!("{JOB}/hem"), format!("answer={answer}"));
        let mut args = vec!["plugin", "push", FIXTURE_HEM_HOSTILE, "--name", name];
        if let Some(version) = version {
            args.extend(["--version", version]);
        }
        args.extend(["--bind", &bind, "--param", &answer]);
        self.sedna(&args)
    }

    /// `sedna` with this host's data directory (so its token) and `--host`.
    fn sedna(&self, args: &[&str]) -> std::process::Output {
        let mut all = args.to_vec();
        all.extend(["--host", &self.url]);
        self.job.sedna(&all)
    }

    /// The inference results so far: `(frame, hard)` of each line, or the error.
    fn results(&self) -> Vec<Result<(String, bool), String>> {
        let path = self.job.root().join("out/inference/results.jsonl");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|r| match r["hard"].as_bool() {
                Some(hard) => Ok((r["frame"].as_str().unwrap().to_string(), hard)),
                None => Err(r.to_string()),
            })
            .collect()
    }

    /// Waits until the worker has run `count` frames in all.
    fn wait_for_frames(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.results().len() < count {
            assert!(
                Instant::now() < deadline,
                "{} frames after 60 s: {}",
                self.results().len(),
                host_log(&self.job)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn metrics(&self) -> HashMap<String, f64> {
        let (status, body) = self.call("GET", "/metrics", None, b"");
        assert_eq!(status, 200);
        let text = body.as_str().unwrap().to_string();
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
        let mut values = HashMap::new();
        for sample in scrape.samples {
            let mut labels: Vec<String> = sample
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            labels.sort();
            let value = match sample.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                prometheus_parse::Value::Histogram(buckets) => {
                    buckets.last().map_or(0.0, |b| b.count)
                }
                prometheus_parse::Value::Summary(_) => continue,
            };
            values.insert(format!("{}{{{}}}", sample.metric, labels.join(",")), value);
        }
        values
    }
}

/// The host's process, killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stdout_lines(child: &mut Child) -> Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (send, receive) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    receive
}

fn host_log(job: &Job) -> String {
    std::fs::read_to_string(job.root().join("host.log")).unwrap_or_default()
}

/// `(pass, frame)` of a frame named `camera-<pass>-<frame>`.
fn position(name: &str) -> (u64, u64) {
    let mut parts = name.rsplitn(3, '-');
    let frame = parts.next().unwrap().parse().unwrap();
    let pass = parts.next().unwrap().parse().unwrap();
    (pass, frame)
}

#[test]
fn a_pushed_hem_changes_the_decisions_of_the_next_frames_and_no_frame_is_dropped() {
    let host = Host::start(&[]);
    host.wait_for_frames(10);
    let metrics_before = host.metrics();

    // The hostile fixture in its well-behaved mode: every frame is hard.
    let out = host.push_hem("always-hard", Some("1"), "true");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("pushed always-hard@1 (hard-example-miner"),
        "{stdout}"
    );
    assert!(
        stdout.contains("bound always-hard@1 to colour-job/hem"),
        "{stdout}"
    );
    let bound_at = host.results().len();
    host.wait_for_frames(bound_at + 10);

    // Not hard until the bind, hard from a frame on, with every frame of the video in
    // order and none failed.
    let results: Vec<(String, bool)> = host
        .results()
        .into_iter()
        .map(|r| r.expect("no frame failed"))
        .collect();
    let first_hard = results.iter().position(|(_, hard)| *hard).unwrap();
    assert!(first_hard >= 10, "{results:?}");
    assert!(
        results[first_hard..].iter().all(|(_, hard)| *hard),
        "{results:?}"
    );
    for pair in results.windows(2) {
        let ((pass, frame), next) = (position(&pair[0].0), position(&pair[1].0));
        let expected = if frame + 1 == VIDEO_FRAMES {
            (pass + 1, 0)
        } else {
            (pass, frame + 1)
        };
        assert_eq!(next, expected, "a frame was dropped: {results:?}");
    }

    let slots = host.get(&format!("/v1/jobs/{JOB}/slots"));
    assert_eq!(slots["hem"], "always-hard@1");
    let status = host.sedna(&["status"]);
    let status = text(&status.stdout);
    assert!(status.contains("job:       colour-job"), "{status}");
    assert!(status.contains("HEM always-hard@1"), "{status}");

    // The counters moved, and say what happened.
    let metrics = host.metrics();
    let frames = format!("sedna_frames_total{{job={JOB}}}");
    assert!(metrics[&frames] > metrics_before[&frames], "{metrics:?}");
    assert!(metrics[&format!("sedna_hard_examples_total{{job={JOB}}}")] >= 10.0);
    assert_eq!(
        metrics[&format!("sedna_plugin_binds_total{{job={JOB},outcome=swapped}}")],
        1.0
    );
    assert!(metrics[&format!("sedna_frame_stage_seconds{{job={JOB},stage=mine}}")] > 0.0);
    assert_eq!(
        metrics[&format!("sedna_frames_failed_total{{job={JOB}}}")],
        0.0
    );
}

#[test]
fn a_refused_bind_keeps_the_serving_plugin_and_a_plugin_in_use_stays_stored() {
    let host = Host::start(&["--max-upload", "1048576"]);
    let token = host.token();
    let dir = tempfile::tempdir().unwrap();
    let hem = std::fs::read(FIXTURE_HEM_HOSTILE).unwrap();
    let trigger = std::fs::read(builtin_file(dir.path(), "HardExampleRatio")).unwrap();

    // What needs no running worker (the token, the upload checks, bad binds) is tested on
    // the router in-process (`routes.rs`); here, against frames that stream.
    let put = |path: &str, body: &[u8]| host.call("PUT", path, Some(&token), body);
    // Binds refused before they reach the slot (no token, a path, no such slot) change
    // nothing and are not counted as refused binds.
    let hem_slot = format!("/v1/jobs/{JOB}/slots/hem");
    let (status, _) = host.call("PUT", &hem_slot, None, br#"{"plugin": "CloudOnly"}"#);
    assert_eq!(status, 401);
    let (status, _) = put(&hem_slot, br#"{"plugin": "/etc/passwd.wasm"}"#);
    assert_eq!(status, 400);
    let (status, _) = put(
        &format!("/v1/jobs/{JOB}/slots/hat"),
        br#"{"plugin": "IBT"}"#,
    );
    assert_eq!(status, 404);
    assert_eq!(
        host.get(&format!("/v1/jobs/{JOB}/slots"))["hem"],
        "EdgeOnly"
    );
    // A plugin that traps in `init` is refused, and the one serving keeps serving.
    let (status, body) = put("/v1/plugins/trapper/1", &hem);
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["plugin"]["world"], "hard-example-miner");
    host.wait_for_frames(5);
    let (status, body) = put(
        &format!("/v1/jobs/{JOB}/slots/hem"),
        br#"{"plugin": "trapper@1", "params": {"mode": "trap-init"}}"#,
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("plugin_failed")),
        "{body}"
    );
    assert!(body["detail"].as_str().unwrap().contains("init"), "{body}");
    assert_eq!(
        host.get(&format!("/v1/jobs/{JOB}/slots"))["hem"],
        "EdgeOnly"
    );
    let served = host.results().len();
    host.wait_for_frames(served + 5);
    assert!(
        host.results()
            .iter()
            .all(|r| r.as_ref().is_ok_and(|(_, hard)| !hard))
    );
    let metrics = host.metrics();
    assert_eq!(
        metrics[&format!("sedna_plugin_binds_total{{job={JOB},outcome=refused}}")],
        1.0
    );
    assert!(
        metrics["sedna_plugin_errors_total{call=init,kind=trap}"] >= 1.0,
        "{metrics:?}"
    );

    // A trigger condition bound to the train trigger shows in the slots.
    let (status, body) = put("/v1/plugins/ratio/1", &trigger);
    assert_eq!(status, 201, "{body}");
    let (status, body) = put(
        &format!("/v1/jobs/{JOB}/slots/train-trigger"),
        br#"{"plugin": "ratio@1", "params": {"window": "10"}}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        host.get(&format!("/v1/jobs/{JOB}/slots"))["train-trigger"],
        "ratio@1"
    );
    // It decides on the worker's recent decisions (none hard: EdgeOnly), at the next check.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !host_log(&host.job).contains("plugin `ratio@1` is false") {
        assert!(Instant::now() < deadline, "{}", host_log(&host.job));
        std::thread::sleep(Duration::from_millis(100));
    }

    // A plugin in use is not removed; once the slot holds another, it is.
    let (status, body) = host.call("DELETE", "/v1/plugins/ratio/1", Some(&token), b"");
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("plugin_in_use")),
        "{body}"
    );
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("`train-trigger` slot of job `colour-job`"),
        "{detail}"
    );
    assert!(host.get("/v1/plugins").to_string().contains("\"ratio\""));
    let (status, body) = put(
        &format!("/v1/jobs/{JOB}/slots/train-trigger"),
        br#"{"plugin": "HardExampleRatio", "params": {"window": "10"}}"#,
    );
    assert_eq!(status, 200, "{body}");
    let (status, _) = host.call("DELETE", "/v1/plugins/ratio/1", Some(&token), b"");
    assert_eq!(status, 204);

    // The CLI lists and removes through the API.
    let out = host.sedna(&["plugin", "list"]);
    let listed = text(&out.stdout);
    assert!(
        listed.contains("trapper") && listed.contains("IBT"),
        "{listed}"
    );
    let out = host.sedna(&["plugin", "rm", "trapper@1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = host.sedna(&["plugin", "rm", "trapper@1"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no stored plugin"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn binds_survive_a_restart_and_roll_back_to_the_job_files_plugin() {
    let host = Host::start(&[]);
    let push = |host: &Host, version: &str, answer: &str| {
        let out = host.push_hem("mine", Some(version), answer);
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    push(&host, "1", "false");
    push(&host, "2", "true");
    let hem = |host: &Host| host.get(&format!("/v1/jobs/{JOB}/slots"))["hem"].clone();
    assert_eq!(hem(&host), "mine@2");

    // A restart binds mine@2 again, with its parameters: every new frame is hard.
    let Host { job, _process, .. } = host;
    drop(_process);
    let host = Host::start_on(job, &[]);
    assert_eq!(hem(&host), "mine@2");
    assert!(
        host_log(&host.job).contains("restored mine@2"),
        "{}",
        host_log(&host.job)
    );
    let from = host.results().len();
    host.wait_for_frames(from + 5);
    assert!(host.results()[from..].iter().all(|r| r.as_ref().unwrap().1));

    // Rollbacks: to mine@1 (never hard), then to the job file's EdgeOnly, then no more.
    let rollback = |host: &Host| host.sedna(&["plugin", "rollback", &format!("{JOB}/hem")]);
    let out = rollback(&host);
    assert!(
        text(&out.stdout).contains("colour-job/hem holds mine@1 again"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(hem(&host), "mine@1");
    let out = rollback(&host);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(hem(&host), "EdgeOnly");
    let out = rollback(&host);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no bind to roll back") && stderr.contains("409"),
        "{stderr}"
    );

    // A kept bind whose plugin is gone at the restart: the job file's plugin, and a warning.
    push(&host, "2", "true");
    let Host { job, _process, .. } = host;
    drop(_process);
    let out = job.sedna(&["plugin", "rm", "mine@2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let host = Host::start_on(job, &[]);
    assert_eq!(hem(&host), "EdgeOnly");
    let log = host_log(&host.job);
    assert!(
        log.contains("mine@2")
            && log.contains("is gone from the store")
            && log.contains("job file's plugin"),
        "{log}"
    );
}

/// `job`'s resources renamed with `suffix`, so that its files and another job's can be
/// given to one process.
fn renamed(job: &Job, suffix: &str) {
    let yaml = std::fs::read_to_string(&job.yaml).unwrap();
    let yaml = yaml
        .replace("name: colours", &format!("name: colours{suffix}"))
        .replace("name: base}", &format!("name: base{suffix}}}"))
        .replace("name: deployed", &format!("name: deployed{suffix}"))
        .replace("colour-job", &format!("colour-job{suffix}"));
    std::fs::write(&job.yaml, yaml).unwrap();
}

#[test]
fn several_jobs_run_in_one_process_under_one_api_and_a_broken_one_stops_none() {
    // colour-job streams a video; -quiet has no worker; -broken has no initial model;
    // -quiet is given as its directory.
    let quiet = Job::new(TRAIN_ENV, "accuracy_delta");
    renamed(&quiet, "-quiet");
    let broken = Job::new(TRAIN_ENV, "accuracy_delta");
    renamed(&broken, "-broken");
    std::fs::remove_file(broken.root().join("models/base.onnx")).unwrap();
    let host = Host::start(&[
        broken.yaml.to_str().unwrap(),
        quiet.root().to_str().unwrap(),
    ]);
    let jobs = host.get("/v1/jobs");
    let mut names: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["colour-job", "colour-job-quiet"], "{jobs}");
    let log = host_log(&host.job);
    assert!(
        log.contains("not running: job colour-job-broken") && log.contains("base.onnx"),
        "{log}"
    );

    // Each job has its own slots and state: a bind reaches the one it names.
    host.wait_for_frames(5);
    let out = host.push_hem("mine", None, "true");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        host.get(&format!("/v1/jobs/{JOB}/slots"))["hem"],
        "mine@latest"
    );
    let (status, body) = host.call(
        "PUT",
        "/v1/jobs/colour-job-quiet/slots/hem",
        Some(&host.token()),
        br#"{"plugin": "mine@latest"}"#,
    );
    assert_eq!(status, 409, "no worker, no hem: {body}");
    assert!(quiet.root().join("out/state.db").exists());
    assert!(!broken.root().join("out/state.db").exists());
}

#[test]
fn the_first_start_makes_a_private_token_and_prints_it_once() {
    let host = Host::start(&[]);
    let printed = host.printed_token.clone().expect("the token is printed");
    assert_eq!(printed, host.token());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let file = host.job.root().join("home/token");
        let mode = std::fs::metadata(file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The first host stops before the next starts: one process runs a job at a time.
    let Host { job, _process, .. } = host;
    drop(_process);
    let again = Host::start_on(job, &[]);
    assert_eq!(again.printed_token, None, "printed once");
    assert_eq!(again.token(), printed);

    // A token supplied in a file replaces it, and a CLI without it is refused.
    let file = again.job.root().join("supplied-token");
    write_private(&file, "a-token-the-operator-chose\n");
    let Host { job, _process, .. } = again;
    drop(_process);
    let supplied = Host::start_on(job, &["--token-file", file.to_str().unwrap()]);
    let hem = std::fs::read(FIXTURE_HEM_HOSTILE).unwrap();
    let (status, _) = supplied.call("PUT", "/v1/plugins/a/1", Some(&printed), &hem);
    assert_eq!(status, 401);
    let (status, _) = supplied.call(
        "PUT",
        "/v1/plugins/a/1",
        Some("a-token-the-operator-chose"),
        &hem,
    );
    assert_eq!(status, 201);
    let out = supplied.sedna(&["plugin", "rm", "a@1"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not this host's"),
        "{}",
        text(&out.stderr)
    );
    let out = supplied.sedna(&[
        "plugin",
        "rm",
        "a@1",
        "--token-file",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_host_that_is_not_there_is_named_in_the_error() {
    let job = Job::new(TRAIN_ENV, "accuracy_delta");
    let out = job.sedna(&[
        "plugin",
        "push",
        FIXTURE_HEM_HOSTILE,
        "--name",
        "mine",
        "--host",
        "127.0.0.1:1",
    ]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cannot reach the host at http://127.0.0.1:1"),
        "{stderr}"
    );
    // Plain HTTP to another machine is refused before anything is sent.
    let out = job.sedna(&["plugin", "list", "--host", "http://edge-1:9301"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("in clear") && stderr.contains("--insecure"),
        "{stderr}"
    );
}

#[test]
fn a_video_url_not_there_yet_is_shown_and_tried_again_until_it_is() {
    let job = Job::new(TRAIN_ENV, "accuracy_delta");
    let video = job.root().join("camera.mp4");
    job.inference_env(&[("video_url", &video.display().to_string())]);
    job.edit(
        "hardExampleMining: {name: IBT}",
        "hardExampleMining: {name: EdgeOnly}",
    );
    // Once: the command fails and names it.
    let out = job.run_once();
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("video_url") && stderr.contains("camera.mp4"),
        "{stderr}"
    );

    // Served: the job runs, its status and metrics say why no frame comes...
    let host = Host::start_on(job, &[]);
    let status = text(&host.sedna(&["status"]).stdout);
    assert!(
        status.contains("source:    not read:") && status.contains("camera.mp4"),
        "{status}"
    );
    let failures = format!("sedna_source_failures_total{{job={JOB}}}");
    assert!(host.metrics()[&failures] >= 1.0);
    // ...until the video is there: frames come, and the failure is gone.
    host.job.record_video(VIDEO_FRAMES);
    host.wait_for_frames(5);
    let status = text(&host.sedna(&["status"]).stdout);
    assert!(!status.contains("not read"), "{status}");
}

#[test]
fn plain_http_on_another_address_warns_at_start() {
    let job = Job::new(TRAIN_ENV, "accuracy_delta");
    let out = job.sedna(&[
        "run",
        job.yaml.to_str().unwrap(),
        "--once",
        "--listen",
        "0.0.0.0:0",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("WARNING: serving the API on 0.0.0.0:0 in plain HTTP")
            && stderr.contains("--tls-self-signed"),
        "{stderr}"
    );
    let out = job.sedna(&[
        "run",
        job.yaml.to_str().unwrap(),
        "--once",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(
        !text(&out.stderr).contains("WARNING"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn https_with_a_self_signed_certificate_is_trusted_by_its_pin_or_its_file_only() {
    let host = Host::start(&["--tls-self-signed"]);
    assert!(host.url.starts_with("https://127.0.0.1:"), "{}", host.url);
    let pin = host
        .printed_fingerprint
        .clone()
        .expect("its fingerprint is printed");
    let cert = host.job.root().join("home/tls/cert.pem");
    let status = |extra: &[&str]| {
        let mut args = vec!["status"];
        args.extend(extra);
        host.sedna(&args)
    };
    let out = status(&["--pin", &pin]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(JOB), "{}", text(&out.stdout));
    let out = status(&["--ca", cert.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Not trusted by the system's roots, nor with another fingerprint.
    let out = status(&[]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--pin") && stderr.contains("--ca"),
        "{stderr}"
    );
    let wrong = format!(
        "{}{}",
        if pin.starts_with('0') { "1" } else { "0" },
        &pin[1..]
    );
    let out = status(&["--pin", &wrong]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("not the pinned {wrong}")),
        "{stderr}"
    );

    // A push over HTTPS with the pin; the token crossed only inside TLS.
    let out = host.sedna(&[
        "plugin",
        "push",
        FIXTURE_HEM_HOSTILE,
        "--name",
        "over-tls",
        "--pin",
        &pin,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Plain HTTP to the HTTPS port gets nothing; a restart keeps the certificate and
    // does not print it again.
    let plain = host.url.replace("https://", "http://");
    let out = host.job.sedna(&["status", "--host", &plain]);
    assert!(!out.status.success());
    let Host { job, _process, .. } = host;
    drop(_process);
    let again = Host::start_on(job, &["--tls-self-signed"]);
    assert_eq!(again.printed_fingerprint, None, "printed once");
    let out = again.sedna(&["status", "--pin", &pin]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_given_certificate_is_served_and_wrong_tokens_are_rate_limited() {
    let certs = tempfile::tempdir().unwrap();
    let (made, _) = sedna::server::tls::ServerTls::self_signed(certs.path(), &[]).unwrap();
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let host = Host::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--max-token-failures",
        "3",
    ]);
    let pin = made.fingerprint;
    let list = |token: &str| {
        let file = host.job.root().join("guess");
        write_private(&file, token);
        host.sedna(&[
            "plugin",
            "rm",
            "nothing@1",
            "--pin",
            &pin,
            "--token-file",
            file.to_str().unwrap(),
        ])
    };
    let guess = "guessed-token-0123456789";
    for _ in 0..3 {
        let stderr = text(&list(guess).stderr);
        assert!(stderr.contains("not this host's"), "{stderr}");
    }
    // Past the limit the client is refused, even with the right token, for a minute.
    for token in [guess.to_string(), host.token()] {
        let stderr = text(&list(&token).stderr);
        assert!(
            stderr.contains("429") && stderr.contains("too_many_failures"),
            "{stderr}"
        );
    }
    // Reads stay open; the log names the client, never the token.
    let out = host.sedna(&["status", "--pin", &pin]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = host_log(&host.job);
    assert!(log.contains("a wrong token from 127.0.0.1"), "{log}");
    assert!(!log.contains(guess), "{log}");
}

#[test]
fn two_cameras_one_down_the_other_streams_and_status_and_metrics_show_both() {
    use crate::camera::{Server, free_port, server_available};
    if !server_available() {
        return;
    }
    let (up, down) = (free_port(), free_port());
    let _server = Server::start(up, &["--user", "viewer", "--password", "s3cret"]);
    let job = Job::new(TRAIN_ENV, "accuracy_delta");
    let cameras = format!(
        "rtsp://viewer:s3cret@127.0.0.1:{up}/cam, rtsp://viewer:s3cret@127.0.0.1:{down}/cam"
    );
    job.inference_env(&[("video_url", &cameras), ("reconnect_max_seconds", "1")]);
    let host = Host::start_on(job, &[]);

    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let status = host.get(&format!("/v1/jobs/{JOB}"));
        let frames = status["inference"]["cameras"][0]["frames"]
            .as_u64()
            .unwrap_or(0);
        if frames >= 25 || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let cameras = &status["inference"]["cameras"];
    assert_eq!(cameras[0]["name"], "camera1", "{status}");
    assert_eq!(cameras[0]["state"], "streaming", "{status}");
    assert!(cameras[0]["frames"].as_u64().unwrap() >= 25, "{status}");
    assert_eq!(
        cameras[1]["camera"],
        format!("rtsp://viewer:***@127.0.0.1:{down}/cam"),
        "{status}"
    );
    assert_ne!(cameras[1]["state"], "streaming", "{status}");
    assert!(cameras[1]["reconnects"].as_u64().unwrap() >= 1, "{status}");
    assert!(
        cameras[1]["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{status}"
    );
    // The results say which camera each frame came from: all from the one that is up.
    let results = host.results();
    assert!(!results.is_empty());
    for (frame, _) in results.iter().flatten() {
        assert!(frame.starts_with("camera1-"), "{frame}");
    }

    let printed = text(&host.sedna(&["status"]).stdout);
    assert!(printed.contains("camera:    camera1"), "{printed}");
    assert!(printed.contains("camera2"), "{printed}");
    let metrics = host.metrics();
    let labels = |n: u32, port: u16| {
        format!("camera=camera{n},job={JOB},url=rtsp://viewer:***@127.0.0.1:{port}/cam")
    };
    assert!(metrics[&format!("sedna_camera_frames_total{{{}}}", labels(1, up))] >= 25.0);
    assert_eq!(
        metrics[&format!("sedna_camera_streaming{{{}}}", labels(1, up))],
        1.0
    );
    assert_eq!(
        metrics[&format!("sedna_camera_streaming{{{}}}", labels(2, down))],
        0.0
    );
    // Every frame the worker ran has its age; the rest were dropped as stale.
    let aged = metrics[&format!("sedna_camera_frame_age_seconds{{{}}}", labels(1, up))];
    let dropped = metrics[&format!("sedna_camera_dropped_frames_total{{{}}}", labels(1, up))];
    assert!(aged >= 1.0 && aged + dropped >= 25.0, "{aged} {dropped}");
    let everything = format!("{status} {printed} {metrics:?} {}", host_log(&host.job));
    assert!(!everything.contains("s3cret"), "the password was shown");
}

#[test]
fn idle_and_silent_connections_neither_hold_the_api_nor_starve_the_job() {
    let host = Host::start(&["--max-connections", "8", "--header-timeout-ms", "500"]);
    host.wait_for_frames(5);
    let addr = host.url.trim_start_matches("http://").to_string();
    // Eight times the cap: connections that never send a header (as a slowloris does),
    // and kept-alive ones that fall silent after their request.
    let silent: Vec<std::net::TcpStream> = (0..64)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    let started = Instant::now();
    let (status, _) = host.call("GET", "/healthz", None, b"");
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the API answered after {:?}",
        started.elapsed()
    );
    // The silent connections were closed by the host: a read sees their end.
    let mut closed = 0;
    for mut stream in silent {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        if std::io::Read::read(&mut stream, &mut [0u8; 1]).is_ok_and(|n| n == 0) {
            closed += 1;
        }
    }
    assert_eq!(closed, 64, "every silent connection is closed");
    // The job went on meanwhile, with its descriptors.
    let frames = host.results().len();
    host.wait_for_frames(frames + 5);
    assert!(!host_log(&host.job).contains("Too many open files"));
}

/// The host's `sedna compile-component` children still running.
fn compile_children(host: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let parent = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().nth(1));
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            parent == Some(host.to_string().as_str())
                && String::from_utf8_lossy(&cmdline).contains("compile-component")
        })
        .collect()
}

#[test]
fn an_upload_whose_client_goes_stops_its_compile_and_stores_nothing() {
    use std::io::Write as _;
    let host = Host::start(&[]);
    let pid = host._process.0.id();
    // Sixteen functions under the 2 MiB screen: over a minute of one core's compiling
    // (within the default bound on two), well within the upload limit.
    let wasm = crate::support::component_with_functions(16, 1900 << 10);
    let address = host.url.trim_start_matches("http://");
    let mut client = std::net::TcpStream::connect(address).unwrap();
    write!(
        client,
        "PUT /v1/plugins/slow/1.0.0 HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
        host.token(),
        wasm.len()
    )
    .unwrap();
    client.write_all(&wasm).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while compile_children(pid).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no compile started: {}",
            host_log(&host.job)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(client);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !compile_children(pid).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the compile went on after its client went: {}",
            host_log(&host.job)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, body) = host.call("GET", "/v1/plugins/slow", Some(&host.token()), b"");
    assert_eq!(status, 404, "{body}");
    // The compile slot was given back: the next upload compiles and is stored.
    let hem = std::fs::read(FIXTURE_HEM_HOSTILE).unwrap();
    let (status, body) = host.call("PUT", "/v1/plugins/after/1.0.0", Some(&host.token()), &hem);
    assert_eq!(status, 201, "{body}");
}

#[test]
fn an_upload_whose_compile_runs_over_its_time_is_refused_with_the_bound() {
    // Time enough for the job's own plugins, not for this upload: sixteen functions
    // under the 2 MiB screen, over a minute of one core's compiling.
    let host = Host::start(&["--compile-timeout", "8"]);
    let wasm = crate::support::component_with_functions(16, 1900 << 10);
    let (status, body) = host.call("PUT", "/v1/plugins/slow/1.0.0", Some(&host.token()), &wasm);
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"], "not_a_component", "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("took over 8 s") && detail.contains("--compile-timeout"),
        "{detail}"
    );
    let (status, _) = host.call("GET", "/v1/plugins/slow", None, b"");
    assert_eq!(status, 404, "nothing is stored");
    assert!(compile_children(host._process.0.id()).is_empty());
}
