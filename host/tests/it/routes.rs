//! The HTTP API's router in this process (`tower::ServiceExt::oneshot`): what a call
//! that needs no running worker answers. `serve.rs` covers what needs a real `sedna run`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use sedna::learn::LocalJob;
use sedna::plugin::PluginStore;
use sedna::server::{Service, Token, router};
use sedna::spec;
use serde_json::Value;
use tower::ServiceExt as _;

use crate::support::job::{Job, TRAIN_ENV};
use crate::support::{FIXTURE_HEM_HOSTILE, builtin_file, runtime, write_private};

const JOB: &str = "colour-job";
const TOKEN: &str = "a-token-for-the-router-tests";

/// The API over a job with no inference worker, a store in a directory of its own,
/// uploads limited to 1 MiB and compiled one at a time.
struct Api {
    app: axum::Router,
    _job: Job,
}

impl Api {
    fn new() -> Self {
        let job = Job::new(TRAIN_ENV, "accuracy_delta");
        let home = job.root().join("home");
        let token_file = job.root().join("token");
        write_private(&token_file, TOKEN);
        let store = PluginStore::open(&home).unwrap();
        let resources = spec::load(std::slice::from_ref(&job.yaml)).unwrap();
        let local = LocalJob::open(&resources, None, runtime(), &store).unwrap();
        let service = Service::new(
            runtime().clone(),
            store,
            Token::read(&token_file).unwrap(),
            vec![local.handle()],
        )
        .max_upload(1 << 20)
        .max_compiles(1);
        Api {
            app: router(Arc::new(service)),
            _job: job,
        }
    }

    /// `(status, body as JSON, or as a string when it is not JSON)`.
    fn call(&self, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> (u16, Value) {
        let authorization = token.map(|token| format!("Bearer {token}"));
        self.call_with(method, path, authorization.as_deref(), body)
    }

    /// A call with this `Authorization` header, as written.
    fn call_with(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        body: &[u8],
    ) -> (u16, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(value) = authorization {
            request = request.header("Authorization", value);
        }
        let request = request.body(Body::from(body.to_vec())).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let response = self.app.clone().oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
            (status, json)
        })
    }

    fn put(&self, path: &str, body: &[u8]) -> (u16, Value) {
        self.call("PUT", path, Some(TOKEN), body)
    }

    fn get(&self, path: &str) -> Value {
        let (status, body) = self.call("GET", path, None, b"");
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }
}

/// `(status, error code)` of an answer.
fn code(answer: &(u16, Value)) -> (u16, Option<&str>) {
    (answer.0, answer.1["error"].as_str())
}

#[test]
fn nothing_changes_without_the_token() {
    let api = Api::new();
    let hem = std::fs::read(FIXTURE_HEM_HOSTILE).unwrap();
    for presented in [None, Some("not-the-token-at-all")] {
        let answer = api.call("PUT", "/v1/plugins/mine/1", presented, &hem);
        assert_eq!(code(&answer), (401, Some("unauthorized")), "{}", answer.1);
        let (status, _) = api.call("DELETE", "/v1/plugins/mine/1", presented, b"");
        assert_eq!(status, 401);
        let bind = br#"{"plugin": "CloudOnly"}"#;
        let (status, _) = api.call("PUT", &format!("/v1/jobs/{JOB}/slots/hem"), presented, bind);
        assert_eq!(status, 401);
    }
    let stored = api.get("/v1/plugins");
    assert!(!stored.to_string().contains("\"mine\""), "{stored}");
    // The scheme is case-insensitive (RFC 9110); the token is not.
    for (n, scheme) in ["bearer", "BEARER"].into_iter().enumerate() {
        let path = format!("/v1/plugins/mine/{}", n + 1);
        let value = format!("{scheme} {TOKEN}");
        let (status, _) = api.call_with("PUT", &path, Some(&value), &hem);
        assert_eq!(status, 201, "{scheme}");
    }
    let wrong = format!("Bearer {}", TOKEN.to_uppercase());
    let (status, _) = api.call_with("PUT", "/v1/plugins/mine/9", Some(&wrong), &hem);
    assert_eq!(status, 401);
}

#[test]
fn uploads_are_checked_before_they_are_stored() {
    let api = Api::new();
    let dir = tempfile::tempdir().unwrap();
    let hem = std::fs::read(FIXTURE_HEM_HOSTILE).unwrap();
    let trigger = std::fs::read(builtin_file(dir.path(), "HardExampleRatio")).unwrap();
    // The wrong world: 422 with the mismatch.
    let answer = api.put("/v1/plugins/ratio/1?world=hard-example-miner", &trigger);
    assert_eq!(code(&answer), (422, Some("wrong_world")), "{}", answer.1);
    let detail = answer.1["detail"].as_str().unwrap();
    assert!(detail.contains("hard-example-miner"), "{detail}");
    // Not a component: text, and a core module.
    for bytes in [&b"hello"[..], b"\0asm\x01\0\0\0"] {
        let answer = api.put("/v1/plugins/junk/1", bytes);
        assert_eq!(
            code(&answer),
            (422, Some("not_a_component")),
            "{}",
            answer.1
        );
    }
    // Over the limit: 413.
    let answer = api.put("/v1/plugins/big/1", &vec![0u8; 2 << 20]);
    assert_eq!(code(&answer), (413, Some("too_large")), "{}", answer.1);
    // Names that could escape the store: 400.
    for name in ["..%2F..%2Fetc", "%2E%2E", "a%20b", &"x".repeat(65)] {
        let answer = api.put(&format!("/v1/plugins/{name}/1"), &hem);
        assert_eq!(
            code(&answer),
            (400, Some("bad_name")),
            "{name}: {}",
            answer.1
        );
    }
    // A good one is stored, with its world.
    let (status, body) = api.put("/v1/plugins/trapper/1", &hem);
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["plugin"]["world"], "hard-example-miner");
    assert!(api.get("/v1/plugins").to_string().contains("\"trapper\""));
}

#[test]
fn uploads_over_the_compile_cap_are_refused_not_queued() {
    let api = Api::new();
    let hem = std::fs::read(FIXTURE_HEM_HOSTILE).unwrap();
    // Six different components (a custom section each), so that none is in the cache.
    let variants: Vec<Vec<u8>> = (0..6u8)
        .map(|i| {
            let mut wasm = hem.clone();
            wasm.extend([0x00, 3, 1, b'v', i]);
            wasm
        })
        .collect();
    let start = std::sync::Barrier::new(variants.len());
    let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let calls: Vec<_> = variants
            .iter()
            .enumerate()
            .map(|(i, wasm)| {
                let (api, start) = (&api, &start);
                scope.spawn(move || {
                    start.wait();
                    api.put(&format!("/v1/plugins/burst/{i}"), wasm)
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let busy: Vec<&(u16, Value)> = answers.iter().filter(|a| a.0 == 503).collect();
    assert!(answers.iter().any(|a| a.0 == 201), "{answers:?}");
    assert!(!busy.is_empty(), "one compiles at a time: {answers:?}");
    assert!(
        busy.iter().all(|a| code(a) == (503, Some("busy"))
            && a.1["detail"].as_str().unwrap().contains("--max-compiles")),
        "{busy:?}"
    );
    // The slot is given back: a later upload compiles.
    let (status, body) = api.put("/v1/plugins/after/1", &variants[5]);
    assert_eq!(status, 201, "{body}");
}

#[test]
fn a_bind_names_a_stored_plugin_a_job_and_a_slot_it_has() {
    let api = Api::new();
    // A stored plugin or a built-in, never a file on the host.
    let answer = api.put(
        &format!("/v1/jobs/{JOB}/slots/hem"),
        br#"{"plugin": "/etc/passwd.wasm"}"#,
    );
    assert_eq!(code(&answer), (400, Some("bad_name")), "{}", answer.1);
    let answer = api.put("/v1/jobs/no-such-job/slots/hem", br#"{"plugin": "IBT"}"#);
    assert_eq!(code(&answer), (404, Some("no_such_job")), "{}", answer.1);
    let answer = api.put(
        &format!("/v1/jobs/{JOB}/slots/hat"),
        br#"{"plugin": "IBT"}"#,
    );
    assert_eq!(code(&answer), (404, Some("no_such_slot")), "{}", answer.1);
    let detail = answer.1["detail"].as_str().unwrap();
    assert!(detail.contains("train-trigger"), "{detail}");
    let answer = api.put(&format!("/v1/jobs/{JOB}/slots/hem"), b"{not json");
    assert_eq!(code(&answer), (400, Some("bad_request")), "{}", answer.1);
    let answer = api.put(
        &format!("/v1/jobs/{JOB}/slots/hem"),
        br#"{"plugin": "nothing@9"}"#,
    );
    assert_eq!(code(&answer), (404, Some("no_such_plugin")), "{}", answer.1);
    // None of those reached the job's slots: no bind was refused there.
    assert_eq!(refused_binds(&api), 0);
    // This job runs no worker, so it has no HEM to replace: the job refuses the bind.
    let answer = api.put(
        &format!("/v1/jobs/{JOB}/slots/hem"),
        br#"{"plugin": "IBT"}"#,
    );
    assert_eq!(code(&answer), (409, Some("no_such_slot")), "{}", answer.1);
    assert_eq!(refused_binds(&api), 1);
}

/// `sedna_plugin_binds_total{outcome="refused"}` of the job.
fn refused_binds(api: &Api) -> u64 {
    let (_, metrics) = api.call("GET", "/metrics", None, b"");
    let prefix = format!("sedna_plugin_binds_total{{job=\"{JOB}\",outcome=\"refused\"}} ");
    metrics
        .as_str()
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {metrics}"))
        .parse()
        .unwrap()
}

#[test]
fn reads_are_open_and_a_wrong_route_says_where_the_api_is() {
    let api = Api::new();
    let (status, body) = api.call("GET", "/healthz", None, b"");
    assert_eq!((status, body.as_str()), (200, Some("ok\n")));
    let jobs = api.get("/v1/jobs");
    assert_eq!(jobs[0]["job"], JOB, "{jobs}");
    assert_eq!(api.get(&format!("/v1/jobs/{JOB}"))["round"], 0);
    let answer = api.call("GET", "/v2/jobs", None, b"");
    assert_eq!(code(&answer), (404, Some("not_found")), "{}", answer.1);
    assert!(answer.1["detail"].as_str().unwrap().contains("/v1"));
    let (status, metrics) = api.call("GET", "/metrics", None, b"");
    assert_eq!(status, 200);
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("sedna_plugin_binds_total{job=\"colour-job\",outcome=\"refused\"} 0"),
        "{metrics}"
    );
}
