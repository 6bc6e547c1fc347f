//! The controller against kube's mock API service: one scenario per transition, each
//! asserting the exact requests, in order, and what they carry.

use std::time::Duration;

use http::{Method, StatusCode};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

use super::fixtures::*;
use super::{FINALIZER, SOON};
use crate::cluster::{RoundData, condition};
use crate::spec::ConditionType::{Completed, Ready, Running, Starting, Waiting};
use crate::spec::Stage::{Deploy, Eval, Train};
use crate::spec::{ConditionType, Stage};

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
        assert!(env[crate::cluster::env::PARAMETERS].contains("\"video_url\""));
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
        // Only outputDir is written: the data and the models are mounted read-only.
        let read_only: Vec<&str> = pod["spec"]["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["readOnly"] == json!(true))
            .map(|m| m["mountPath"].as_str().unwrap())
            .collect();
        assert_eq!(
            read_only,
            [
                "/data/helmet_detection/train_data",
                "/models/base",
                "/models/deploy"
            ]
        );
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
    scenario(at(Train, Ready), |mut api| async move {
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
fn with_every_file_in_object_storage_a_stage_runs_unpinned_with_the_secrets_keys() {
    // The templates name no node: the Pods go where the data is, or anywhere.
    let unpinned = || {
        let mut job = at(Train, Ready);
        job.spec
            .train_spec
            .template
            .spec
            .as_mut()
            .unwrap()
            .node_name = None;
        job
    };
    let mut job = unpinned();
    job.spec.output_dir = "s3://runs/helmet".into();
    scenario(job, |mut api| async move {
        api.looks_at_with(&in_buckets(), vec![serving()]).await;
        let pod = api.created_pod().await;
        assert!(pod["spec"]["nodeName"].is_null(), "{}", pod["spec"]);
        let host_paths: Vec<&Value> = pod["spec"]["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| !v["hostPath"].is_null())
            .collect();
        assert!(host_paths.is_empty(), "{host_paths:?}");
        let refs: Vec<(&str, &str, bool)> = pod["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| {
                let r = &e["valueFrom"]["secretKeyRef"];
                Some((
                    e["name"].as_str()?,
                    r["name"].as_str()?,
                    r["optional"].as_bool()?,
                ))
            })
            .collect();
        for (key, optional) in [
            ("ACCESS_KEY_ID", false),
            ("SECRET_ACCESS_KEY", false),
            ("S3_ENDPOINT_URL", true),
        ] {
            assert!(refs.contains(&(key, "minio", optional)), "{key}: {refs:?}");
        }
        api.transition("Train", "Starting", "Normal").await;
        api.done().await;
    });
    // With the data on the node, the stage runs there.
    scenario(unpinned(), |mut api| async move {
        api.looks_at(vec![serving()]).await;
        let pod = api.created_pod().await;
        assert_eq!(pod["spec"]["nodeName"], "edge-node");
        api.transition("Train", "Starting", "Normal").await;
        api.done().await;
    });
}

#[test]
fn a_retried_stage_first_deletes_the_failed_attempt() {
    let action = scenario(at(Train, Ready), |mut api| async move {
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
    scenario(at(Train, Ready), |mut api| async move {
        api.looks_at(vec![serving(), pod("helmet-train-3", "train", "Pending")])
            .await;
        api.transition("Train", "Starting", "Normal").await;
        api.done().await;
    });
}

#[test]
fn the_stage_follows_its_pod_into_running_and_completed() {
    scenario(at(Train, Starting), |mut api| async move {
        api.looks_at(vec![serving(), pod("helmet-train-3", "train", "Running")])
            .await;
        api.transition("Train", "Running", "Normal").await;
        api.done().await;
    });
    // Running again: nothing to say.
    scenario(at(Train, Running), |mut api| async move {
        api.looks_at(vec![serving(), pod("helmet-train-3", "train", "Running")])
            .await;
        api.done().await;
    });
    let report = json!({"samples": 40, "models": [{"url": "/output/train/3/model.onnx", "metrics": {"loss": [0.5, 0.25]}}]});
    scenario(at(Train, Running), |mut api| async move {
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
    scenario(at(Eval, Running), |mut api| async move {
        let failed = pod("helmet-eval-3", "eval", "Failed");
        let said = "TEST_DATASET_URL: /output/data/train/3/eval.txt holds no samples";
        api.looks_at(vec![serving(), terminated(failed, 1, "Error", said)])
            .await;
        let last = api.transition("Eval", "Failed", "Warning").await;
        says(&last, "holds no samples");
        api.done().await;
    });
    // A stage whose Pod is gone fails too.
    scenario(at(Train, Running), |mut api| async move {
        api.looks_at(vec![serving()]).await;
        let last = api.transition("Train", "Failed", "Warning").await;
        says(&last, "was deleted");
        api.done().await;
    });
}

#[test]
fn a_trained_round_gets_its_eval_pod() {
    scenario(at(Train, Completed), |mut api| async move {
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
    scenario(at(Deploy, Ready), |mut api| async move {
        api.looks_at(vec![serving()]).await;
        let last = api.transition("Deploy", "Completed", "Normal").await;
        says(&last, "hot update");
        api.done().await;
    });
}

#[test]
fn a_deploy_without_hot_update_replaces_the_inference_pod() {
    let mut job = at(Deploy, Ready);
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
    scenario(at(Train, Waiting), |mut api| async move {
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
        (Train, Waiting),
        (Eval, Completed),
        (Deploy, Completed),
        (Train, ConditionType::Failed),
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
fn a_job_naming_a_directory_the_administrator_does_not_allow_gets_no_pod() {
    // Its files are under /output, /data and /models; only /data is allowed.
    let action = scenario_allowing(vec!["/data".into()], job(None), |mut api| async move {
        let fixtures = fixtures();
        for (path, body) in [
            ("models/initial-model", json!(fixtures.models[0])),
            ("models/deploy-model", json!(fixtures.models[1])),
            ("datasets/incremental-dataset", json!(fixtures.datasets[0])),
        ] {
            let path = format!("/apis/sedna.io/v1alpha1/namespaces/edge/{path}");
            api.expect(Method::GET, &path, body).await;
        }
        assert_eq!(
            api.event().await,
            ("HostPathNotAllowed".into(), "Warning".into())
        );
        api.done().await;
    });
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
}

#[test]
fn deletion_removes_the_pods_then_the_finalizer() {
    let mut deleting = at(Train, Running);
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
    for i in 0..(crate::cluster::STATUS_CONDITIONS_KEPT + 5) {
        let status = crate::cluster::appended(
            &job,
            condition(
                Stage::Train,
                ConditionType::Waiting,
                "Test",
                format!("{i}"),
                None,
            ),
        );
        job.status = Some(status);
    }
    let conditions = &job.status.as_ref().unwrap().conditions;
    assert_eq!(conditions.len(), crate::cluster::STATUS_CONDITIONS_KEPT);
    assert_eq!(conditions.last().unwrap().message.as_deref(), Some("24"));
    assert_eq!(conditions[0].message.as_deref(), Some("5"));
}
