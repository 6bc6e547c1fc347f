//! The controller against kube's mock API service: one scenario per transition, each
//! asserting the exact requests, in order, and what they carry.

use std::future::Future;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

use super::*;
use crate::api::{self, IncrementalLearningJob, IncrementalLearningJobStatus, JobCondition};
use crate::cluster::{RoundData, condition};

const JOBS: &str = "/apis/sedna.io/v1alpha1/namespaces/edge/incrementallearningjobs/helmet";
const PODS: &str = "/api/v1/namespaces/edge/pods";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/edge/events";
const LIST_PODS: &str = "/api/v1/namespaces/edge/pods?&labelSelector=sedna.io%2Fjob%3Dhelmet";

/// The API server's side: each request the controller must send, in order.
struct ApiServer(Handle<Request<Body>, Response<Body>>);

impl ApiServer {
    /// Takes the next request, checks its method and path (with the query), answers
    /// `reply` and returns the request's JSON body (`null` when empty).
    async fn expect(&mut self, method: Method, path: &str, reply: Value) -> Value {
        self.answer(method, path, StatusCode::OK, reply).await
    }

    async fn answer(
        &mut self,
        method: Method,
        path: &str,
        status: StatusCode,
        reply: Value,
    ) -> Value {
        let (request, send) = self.0.next_request().await.unwrap_or_else(|| {
            panic!("expected {method} {path}, but the controller sent nothing more")
        });
        let got = format!(
            "{} {}",
            request.method(),
            request.uri().path_and_query().unwrap()
        );
        assert_eq!(got, format!("{method} {path}"));
        let body = request.into_body().collect_bytes().await.unwrap();
        let body = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap()
        };
        let reply = if reply.is_null() { body.clone() } else { reply };
        send.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap(),
        );
        body
    }

    /// The Models and the Dataset the job names, as every apply reads them first.
    async fn resources(&mut self) {
        let base = "/apis/sedna.io/v1alpha1/namespaces/edge";
        let fixtures = fixtures();
        for (path, resource) in [
            (
                format!("{base}/models/initial-model"),
                json!(fixtures.models[0]),
            ),
            (
                format!("{base}/models/deploy-model"),
                json!(fixtures.models[1]),
            ),
            (
                format!("{base}/datasets/incremental-dataset"),
                json!(fixtures.datasets[0]),
            ),
        ] {
            self.expect(Method::GET, &path, resource).await;
        }
    }

    /// What every look at a job reads first: the Models and the Dataset, then the job's
    /// Pods (`pods`).
    async fn looks_at(&mut self, pods: Vec<Value>) {
        self.resources().await;
        self.list_pods(pods).await;
    }

    async fn list_pods(&mut self, pods: Vec<Value>) {
        let list = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": pods});
        self.expect(Method::GET, LIST_PODS, list).await;
    }

    /// An Event about the job: its reason and type.
    async fn event(&mut self) -> (String, String) {
        let event = self
            .expect(Method::POST, &format!("{EVENTS}?"), Value::Null)
            .await;
        assert_eq!(event["regarding"]["name"], "helmet");
        (
            event["reason"].as_str().unwrap().to_string(),
            event["type"].as_str().unwrap().to_string(),
        )
    }

    /// A status patch: the conditions it sets. It is written over the version read.
    async fn status(&mut self) -> Vec<JobCondition> {
        let patch = self
            .expect(Method::PATCH, &format!("{JOBS}/status?"), json!(job(None)))
            .await;
        assert_eq!(patch["metadata"]["resourceVersion"], "41", "{patch}");
        let status: IncrementalLearningJobStatus =
            serde_json::from_value(patch["status"].clone()).unwrap();
        status.conditions
    }

    /// A transition: the status patch, whose last condition is `stage kind`, then its
    /// Event (reason `<stage><kind>`, type `event`). Returns the condition.
    async fn transition(&mut self, stage: &str, kind: &str, event: &str) -> JobCondition {
        let last = self.status().await.pop().expect("a condition");
        assert_eq!((last.stage.as_str(), last.kind.as_str()), (stage, kind));
        assert_eq!(self.event().await, (format!("{stage}{kind}"), event.into()));
        last
    }

    async fn created_pod(&mut self) -> Value {
        self.expect(Method::POST, &format!("{PODS}?"), Value::Null)
            .await
    }

    /// Nothing more was sent.
    async fn done(mut self) {
        if let Some((request, _)) = self.0.next_request().await {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
    }
}

fn fixtures() -> api::Resources {
    let mut resources = api::parse(
        std::path::Path::new("quick-start.yaml"),
        include_str!("../../../tests/data/quick-start.yaml"),
    )
    .unwrap();
    resources.models[0].spec.url = "/models/base/model.onnx".into();
    resources.models[1].spec.url = "/models/deploy/model.onnx".into();
    for meta in resources
        .models
        .iter_mut()
        .map(|m| &mut m.metadata)
        .chain(resources.datasets.iter_mut().map(|d| &mut d.metadata))
    {
        meta.namespace = Some("edge".into());
    }
    resources
}

/// The quick start's job as the API server has it: in namespace `edge`, with the
/// controller's finalizer and `status`.
fn job(status: Option<IncrementalLearningJobStatus>) -> IncrementalLearningJob {
    let mut job = fixtures().jobs.remove(0);
    job.metadata.name = Some("helmet".into());
    job.metadata.namespace = Some("edge".into());
    job.metadata.uid = Some("0e1f".into());
    job.metadata.finalizers = Some(vec![FINALIZER.into()]);
    job.metadata.resource_version = Some("41".into());
    job.status = status;
    job
}

fn round_data() -> RoundData {
    RoundData {
        round: 3,
        train_dataset_url: "/output/data/train/3/train.txt".into(),
        test_dataset_url: "/output/data/train/3/eval.txt".into(),
        base_model_url: "/models/deploy/model.onnx".into(),
        model_url: "/output/train/3/model.onnx".into(),
        report: None,
    }
}

/// A job whose last condition is `stage kind` for round 3.
fn at(stage: &str, kind: &str) -> IncrementalLearningJob {
    let data = round_data();
    let status = IncrementalLearningJobStatus {
        conditions: vec![
            condition("Train", "Waiting", "JobStarted", "", None),
            condition(stage, kind, "Test", "", Some(&data)),
        ],
        start_time: Some("2026-11-29T00:00:00Z".into()),
        completion_time: None,
    };
    job(Some(status))
}

fn pod(name: &str, worker: &str, phase: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "edge", "labels": {"sedna.io/job": "helmet", "sedna.io/worker": worker}},
        "status": {"phase": phase},
    })
}

/// `pod` with its container ended: exit code, reason and termination message.
fn terminated(mut pod: Value, exit_code: i32, reason: &str, message: &str) -> Value {
    pod["status"]["containerStatuses"] = json!([{
        "name": "worker", "image": "sedna", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": exit_code, "reason": reason, "message": message}},
    }]);
    pod
}

fn serving() -> Value {
    pod("helmet-infer", "infer", "Running")
}

/// Runs one reconcile of `job` against the script `api` plays, and returns its action.
fn scenario<F, Fut>(job: IncrementalLearningJob, api: F) -> Action
where
    F: FnOnce(ApiServer) -> Fut,
    Fut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let context = Arc::new(Context {
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: "sedna-controller".into(),
                    instance: None,
                },
            ),
            client,
        });
        let reconciled = tokio::spawn(reconcile(Arc::new(job), context));
        api(ApiServer(handle)).await;
        reconciled.await.unwrap().expect("reconcile succeeds")
    })
}

/// The condition's message says `text`.
fn says(condition: &JobCondition, text: &str) {
    let message = condition.message.as_deref().unwrap_or_default();
    assert!(message.contains(text), "{text:?} not in {condition:?}");
}

fn env(pod: &Value) -> std::collections::BTreeMap<String, String> {
    pod["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().into(),
                e["value"].as_str().unwrap_or_default().into(),
            )
        })
        .collect()
}

#[test]
fn a_new_job_gets_the_finalizer_first() {
    let mut new = job(None);
    new.metadata.finalizers = None;
    let action = scenario(new, |mut api| async move {
        let patch = api
            .expect(Method::PATCH, &format!("{JOBS}?"), json!(job(None)))
            .await;
        assert_eq!(
            patch,
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
            ])
        );
        api.done().await;
    });
    assert_eq!(action, Action::await_change());
}

#[test]
fn start_creates_the_inference_worker_and_waits_for_the_trigger() {
    scenario(job(None), |mut api| async move {
        api.looks_at(vec![]).await;
        let pod = api.created_pod().await;
        assert_eq!(pod["metadata"]["name"], "helmet-infer");
        assert_eq!(pod["metadata"]["labels"]["sedna.io/job"], "helmet");
        assert_eq!(pod["metadata"]["labels"]["sedna.io/worker"], "infer");
        let owner = &pod["metadata"]["ownerReferences"][0];
        assert_eq!(
            (
                &owner["kind"],
                &owner["name"],
                &owner["uid"],
                &owner["controller"]
            ),
            (
                &json!("IncrementalLearningJob"),
                &json!("helmet"),
                &json!("0e1f"),
                &json!(true)
            )
        );
        assert_eq!(pod["spec"]["nodeName"], "edge-node");
        let env = env(&pod);
        assert_eq!(env["MODEL_URL"], "/models/deploy/model.onnx");
        assert_eq!(env["BASE_MODEL_URL"], "/models/base/model.onnx");
        assert_eq!(env["HEM_NAME"], "IBT");
        assert_eq!(
            serde_json::from_str::<Value>(&env["HEM_PARAMETERS"]).unwrap(),
            json!({"threshold_img": "0.9", "threshold_box": "0.9"})
        );
        assert_eq!(env["MODEL_HOT_UPDATE"], "true");
        assert_eq!(env["MODEL_POLL_PERIOD_SECONDS"], "60");
        assert_eq!(env["OUTPUT_DIR"], "/output");
        assert_eq!(env["JOB_NAME"], "helmet");
        // The template's own entries stay, and are the worker's parameters.
        assert_eq!(env["video_url"], "file://video/video.mp4");
        assert!(env[crate::cluster::pods::PARAMETERS_ENV].contains("\"video_url\""));
        // The template's volumes stay; the job's host directories are added.
        let volumes: Vec<&str> = pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(volumes[..2], ["localvideo", "hedir"]);
        let host_paths: Vec<&str> = pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["hostPath"]["path"].as_str())
            .collect();
        for dir in [
            "/output",
            "/data/helmet_detection/train_data",
            "/models/base",
            "/models/deploy",
        ] {
            assert!(
                host_paths.contains(&dir),
                "{dir} not mounted: {host_paths:?}"
            );
        }
        assert_eq!(
            api.event().await,
            ("InferenceWorkerCreated".into(), "Normal".into())
        );
        let conditions = api.status().await;
        assert_eq!(conditions.len(), 1);
        assert_eq!(
            (conditions[0].stage.as_str(), conditions[0].kind.as_str()),
            ("Train", "Waiting")
        );
        assert_eq!(api.event().await, ("TrainWaiting".into(), "Normal".into()));
        api.done().await;
    });
}

#[test]
fn train_ready_creates_the_train_pod() {
    scenario(at("Train", "Ready"), |mut api| async move {
        api.looks_at(vec![serving()]).await;
        let pod = api.created_pod().await;
        assert_eq!(pod["metadata"]["name"], "helmet-train-3");
        assert_eq!(pod["metadata"]["labels"]["sedna.io/round"], "3");
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        assert_eq!(
            pod["spec"]["containers"][0]["terminationMessagePolicy"],
            "FallbackToLogsOnError"
        );
        let env = env(&pod);
        assert_eq!(env["BASE_MODEL_URL"], "/models/deploy/model.onnx");
        assert_eq!(env["TRAIN_DATASET_URL"], "/output/data/train/3/train.txt");
        assert_eq!(env["MODEL_URL"], "/output/train/3/model.onnx");
        assert_eq!(env["epochs"], "1");
        let conditions = api.status().await;
        let last = conditions.last().unwrap();
        assert_eq!(
            (last.stage.as_str(), last.kind.as_str()),
            ("Train", "Starting")
        );
        assert_eq!(
            serde_json::from_str::<RoundData>(last.data.as_deref().unwrap()).unwrap(),
            round_data()
        );
        assert_eq!(api.event().await, ("TrainStarting".into(), "Normal".into()));
        api.done().await;
    });
}

#[test]
fn a_retried_stage_first_deletes_the_failed_attempt() {
    let action = scenario(at("Train", "Ready"), |mut api| async move {
        api.looks_at(vec![serving(), pod("helmet-train-3", "train", "Failed")])
            .await;
        api.expect(
            Method::DELETE,
            &format!("{PODS}/helmet-train-3?"),
            json!(pod("helmet-train-3", "train", "Failed")),
        )
        .await;
        api.done().await;
    });
    assert_eq!(action, Action::requeue(SOON));
}

#[test]
fn a_live_pod_of_the_stage_is_recorded_not_replaced() {
    // A look whose status write did not land made the Pod already.
    scenario(at("Train", "Ready"), |mut api| async move {
        api.looks_at(vec![serving(), pod("helmet-train-3", "train", "Pending")])
            .await;
        api.transition("Train", "Starting", "Normal").await;
        api.done().await;
    });
}

#[test]
fn the_stage_follows_its_pod_into_running_and_completed() {
    scenario(at("Train", "Starting"), |mut api| async move {
        api.looks_at(vec![serving(), pod("helmet-train-3", "train", "Running")])
            .await;
        api.transition("Train", "Running", "Normal").await;
        api.done().await;
    });
    // Running again: nothing to say.
    scenario(at("Train", "Running"), |mut api| async move {
        api.looks_at(vec![serving(), pod("helmet-train-3", "train", "Running")])
            .await;
        api.done().await;
    });
    let report = json!({"samples": 40, "models": [{"url": "/output/train/3/model.onnx", "metrics": {"loss": [0.5, 0.25]}}]});
    scenario(at("Train", "Running"), |mut api| async move {
        let done = pod("helmet-train-3", "train", "Succeeded");
        let done = terminated(done, 0, "Completed", &report.to_string());
        api.looks_at(vec![serving(), done]).await;
        let last = api.transition("Train", "Completed", "Normal").await;
        let data: RoundData = serde_json::from_str(last.data.as_deref().unwrap()).unwrap();
        assert_eq!(data.report, Some(report));
        api.done().await;
    });
}

#[test]
fn a_failed_pod_fails_its_stage_with_its_message() {
    scenario(at("Eval", "Running"), |mut api| async move {
        let failed = pod("helmet-eval-3", "eval", "Failed");
        let said = "TEST_DATASET_URL: /output/data/train/3/eval.txt holds no samples";
        api.looks_at(vec![serving(), terminated(failed, 1, "Error", said)])
            .await;
        let last = api.transition("Eval", "Failed", "Warning").await;
        says(&last, "holds no samples");
        api.done().await;
    });
    // A stage whose Pod is gone fails too.
    scenario(at("Train", "Running"), |mut api| async move {
        api.looks_at(vec![serving()]).await;
        let last = api.transition("Train", "Failed", "Warning").await;
        says(&last, "was deleted");
        api.done().await;
    });
}

#[test]
fn a_trained_round_gets_its_eval_pod() {
    scenario(at("Train", "Completed"), |mut api| async move {
        api.looks_at(vec![serving(), pod("helmet-train-3", "train", "Succeeded")])
            .await;
        let pod = api.created_pod().await;
        assert_eq!(pod["metadata"]["name"], "helmet-eval-3");
        let env = env(&pod);
        assert_eq!(
            env["MODEL_URLS"],
            "/output/train/3/model.onnx;/models/deploy/model.onnx"
        );
        assert_eq!(env["TEST_DATASET_URL"], "/output/data/train/3/eval.txt");
        assert_eq!(env["input_shape"], "352,640");
        api.transition("Eval", "Starting", "Normal").await;
        api.done().await;
    });
}

#[test]
fn a_hot_update_deploy_leaves_the_inference_pod_serving() {
    scenario(at("Deploy", "Ready"), |mut api| async move {
        api.looks_at(vec![serving()]).await;
        let last = api.transition("Deploy", "Completed", "Normal").await;
        says(&last, "hot update");
        api.done().await;
    });
}

#[test]
fn a_deploy_without_hot_update_replaces_the_inference_pod() {
    let mut job = at("Deploy", "Ready");
    job.spec.deploy_spec.model.hot_update_enabled = false;
    scenario(job, |mut api| async move {
        api.looks_at(vec![serving()]).await;
        api.expect(Method::DELETE, &format!("{PODS}/helmet-infer?"), serving())
            .await;
        let last = api.transition("Deploy", "Completed", "Normal").await;
        says(&last, "replaced");
        api.done().await;
    });
}

#[test]
fn an_ended_inference_pod_is_replaced() {
    scenario(at("Train", "Waiting"), |mut api| async move {
        api.looks_at(vec![pod("helmet-infer", "infer", "Failed")])
            .await;
        api.expect(Method::DELETE, &format!("{PODS}/helmet-infer?"), serving())
            .await;
        assert_eq!(
            api.event().await,
            ("InferenceWorkerEnded".into(), "Warning".into())
        );
        api.done().await;
    });
}

#[test]
fn the_agents_turn_changes_nothing() {
    for (stage, kind) in [
        ("Train", "Waiting"),
        ("Eval", "Completed"),
        ("Deploy", "Completed"),
        ("Train", "Failed"),
    ] {
        scenario(at(stage, kind), |mut api| async move {
            api.looks_at(vec![serving()]).await;
            api.done().await;
        });
    }
}

#[test]
fn a_missing_model_is_an_event_not_a_crash() {
    let action = scenario(job(None), |mut api| async move {
        let missing = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "models \"initial-model\" not found", "reason": "NotFound", "code": 404});
        api.answer(
            Method::GET,
            "/apis/sedna.io/v1alpha1/namespaces/edge/models/initial-model",
            StatusCode::NOT_FOUND,
            missing,
        )
        .await;
        let fixtures = fixtures();
        api.expect(
            Method::GET,
            "/apis/sedna.io/v1alpha1/namespaces/edge/models/deploy-model",
            json!(fixtures.models[1]),
        )
        .await;
        api.expect(
            Method::GET,
            "/apis/sedna.io/v1alpha1/namespaces/edge/datasets/incremental-dataset",
            json!(fixtures.datasets[0]),
        )
        .await;
        assert_eq!(
            api.event().await,
            ("MissingResource".into(), "Warning".into())
        );
        api.done().await;
    });
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
}

#[test]
fn deletion_removes_the_pods_then_the_finalizer() {
    let mut deleting = at("Train", "Running");
    deleting.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-11-29T00:00:00Z".parse().unwrap(),
        ));
    let action = scenario(deleting, |mut api| async move {
        let list = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []});
        let body = api
            .expect(
                Method::DELETE,
                "/api/v1/namespaces/edge/pods?&labelSelector=sedna.io%2Fjob%3Dhelmet",
                list,
            )
            .await;
        assert_eq!(body["propagationPolicy"], "Background");
        assert_eq!(api.event().await, ("Deleted".into(), "Normal".into()));
        let patch = api
            .expect(Method::PATCH, &format!("{JOBS}?"), json!(job(None)))
            .await;
        assert_eq!(
            patch,
            json!([
                {"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
                {"op": "remove", "path": "/metadata/finalizers/0"},
            ])
        );
        api.done().await;
    });
    assert_eq!(action, Action::await_change());
}

#[test]
fn conditions_are_bounded() {
    let mut job = job(None);
    for i in 0..(crate::cluster::MAX_CONDITIONS + 5) {
        let status = crate::cluster::appended(
            &job,
            condition("Train", "Waiting", "Test", format!("{i}"), None),
        );
        job.status = Some(status);
    }
    let conditions = &job.status.as_ref().unwrap().conditions;
    assert_eq!(conditions.len(), crate::cluster::MAX_CONDITIONS);
    assert_eq!(conditions.last().unwrap().message.as_deref(), Some("24"));
    assert_eq!(conditions[0].message.as_deref(), Some("5"));
}
