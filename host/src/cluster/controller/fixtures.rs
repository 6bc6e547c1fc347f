//! What the controller's tests are made of, in the style of kube-rs's controller-rs
//! `fixtures.rs`: the job at a given condition, Pods in a given phase, and the API server's
//! side of a reconcile as a script of expected requests ([`ApiServer`]).

use std::future::Future;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

use super::{Context, FINALIZER, reconcile};
use crate::cluster::{RoundData, condition};
use crate::spec::{
    self, ConditionType, IncrementalLearningJob, IncrementalLearningJobStatus, JobCondition, Stage,
};

pub(super) const JOBS: &str =
    "/apis/sedna.io/v1alpha1/namespaces/edge/incrementallearningjobs/helmet";
pub(super) const PODS: &str = "/api/v1/namespaces/edge/pods";
pub(super) const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/edge/events";
pub(super) const LIST_PODS: &str =
    "/api/v1/namespaces/edge/pods?&labelSelector=sedna.io%2Fjob%3Dhelmet";

/// The API server's side: each request the controller must send, in order.
pub(super) struct ApiServer(Handle<Request<Body>, Response<Body>>);

impl ApiServer {
    /// Takes the next request, checks its method and path (with the query), answers
    /// `reply` and returns the request's JSON body (`null` when empty).
    pub(super) async fn expect(&mut self, method: Method, path: &str, reply: Value) -> Value {
        self.answer(method, path, StatusCode::OK, reply).await
    }

    pub(super) async fn answer(
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
    pub(super) async fn resources(&mut self) {
        self.resources_from(&fixtures()).await;
    }

    /// [`ApiServer::resources`] as `fixtures` has them.
    pub(super) async fn resources_from(&mut self, fixtures: &spec::Resources) {
        let base = "/apis/sedna.io/v1alpha1/namespaces/edge";
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
    pub(super) async fn looks_at(&mut self, pods: Vec<Value>) {
        self.resources().await;
        self.list_pods(pods).await;
    }

    /// [`ApiServer::looks_at`] with the Models and the Dataset of `fixtures`.
    pub(super) async fn looks_at_with(&mut self, fixtures: &spec::Resources, pods: Vec<Value>) {
        self.resources_from(fixtures).await;
        self.list_pods(pods).await;
    }

    pub(super) async fn list_pods(&mut self, pods: Vec<Value>) {
        let list = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": pods});
        self.expect(Method::GET, LIST_PODS, list).await;
    }

    /// An Event about the job: its reason and type.
    pub(super) async fn event(&mut self) -> (String, String) {
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
    pub(super) async fn status(&mut self) -> Vec<JobCondition> {
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
    pub(super) async fn transition(
        &mut self,
        stage: &str,
        kind: &str,
        event: &str,
    ) -> JobCondition {
        let last = self.status().await.pop().expect("a condition");
        assert_eq!((last.stage.as_str(), last.kind.as_str()), (stage, kind));
        assert_eq!(self.event().await, (format!("{stage}{kind}"), event.into()));
        last
    }

    pub(super) async fn created_pod(&mut self) -> Value {
        self.expect(Method::POST, &format!("{PODS}?"), Value::Null)
            .await
    }

    /// Nothing more was sent.
    pub(super) async fn done(mut self) {
        if let Some((request, _)) = self.0.next_request().await {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
    }
}

pub(super) fn fixtures() -> spec::Resources {
    let mut resources = spec::parse(
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

/// [`fixtures`] with the models and the data index in buckets, read with the Secret
/// `minio`.
pub(super) fn in_buckets() -> spec::Resources {
    let mut resources = fixtures();
    resources.models[0].spec.url = "s3://models/base.onnx".into();
    resources.models[1].spec.url = "s3://models/deployed.onnx".into();
    resources.datasets[0].spec.url = "s3://data/helmet/index.txt".into();
    resources.datasets[0].spec.credential_name = Some("minio".into());
    resources
}

/// The quick start's job as the API server has it: in namespace `edge`, with the
/// controller's finalizer and `status`.
pub(super) fn job(status: Option<IncrementalLearningJobStatus>) -> IncrementalLearningJob {
    let mut job = fixtures().jobs.remove(0);
    job.metadata.name = Some("helmet".into());
    job.metadata.namespace = Some("edge".into());
    job.metadata.uid = Some("0e1f".into());
    job.metadata.finalizers = Some(vec![FINALIZER.into()]);
    job.metadata.resource_version = Some("41".into());
    job.status = status;
    job
}

pub(super) fn round_data() -> RoundData {
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
pub(super) fn at(stage: Stage, kind: ConditionType) -> IncrementalLearningJob {
    let data = round_data();
    let status = IncrementalLearningJobStatus {
        conditions: vec![
            condition(Stage::Train, ConditionType::Waiting, "JobStarted", "", None),
            condition(stage, kind, "Test", "", Some(&data)),
        ],
        start_time: Some("2026-11-29T00:00:00Z".into()),
        completion_time: None,
    };
    job(Some(status))
}

pub(super) fn pod(name: &str, worker: &str, phase: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "edge", "labels": {"sedna.io/job": "helmet", "sedna.io/worker": worker}},
        "status": {"phase": phase},
    })
}

/// `pod` with its container ended: exit code, reason and termination message.
pub(super) fn terminated(mut pod: Value, exit_code: i32, reason: &str, message: &str) -> Value {
    pod["status"]["containerStatuses"] = json!([{
        "name": "worker", "image": "sedna", "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": exit_code, "reason": reason, "message": message}},
    }]);
    pod
}

pub(super) fn serving() -> Value {
    pod("helmet-infer", "infer", "Running")
}

impl Context {
    /// A context whose client talks to a mock API server, and that server's side; jobs
    /// may mount `host_paths` only.
    pub(super) fn test_allowing(host_paths: Vec<std::path::PathBuf>) -> (Arc<Context>, ApiServer) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let context = Context {
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: "sedna-controller".into(),
                    instance: None,
                },
            ),
            client,
            host_paths,
        };
        (Arc::new(context), ApiServer(handle))
    }
}

/// Runs one reconcile of `job` against the script `api` plays, and returns its action.
pub(super) fn scenario<F, Fut>(job: IncrementalLearningJob, api: F) -> Action
where
    F: FnOnce(ApiServer) -> Fut,
    Fut: Future<Output = ()>,
{
    scenario_allowing(vec!["/".into()], job, api)
}

/// [`scenario`] with jobs allowed to mount `host_paths` only.
pub(super) fn scenario_allowing<F, Fut>(
    host_paths: Vec<std::path::PathBuf>,
    job: IncrementalLearningJob,
    api: F,
) -> Action
where
    F: FnOnce(ApiServer) -> Fut,
    Fut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (context, server) = Context::test_allowing(host_paths);
        let reconciled = tokio::spawn(reconcile(Arc::new(job), context));
        api(server).await;
        reconciled.await.unwrap().expect("reconcile succeeds")
    })
}

/// The condition's message says `text`.
pub(super) fn says(condition: &JobCondition, text: &str) {
    let message = condition.message.as_deref().unwrap_or_default();
    assert!(message.contains(text), "{text:?} not in {condition:?}");
}

pub(super) fn env(pod: &Value) -> std::collections::BTreeMap<String, String> {
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
