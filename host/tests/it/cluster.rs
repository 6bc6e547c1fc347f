//! Sedna's roles on Kubernetes without a cluster: the agent's moves (made with the code
//! `sedna run` decides with) and the workers the controller's Pods run, taken through
//! whole rounds by hand, as the controller would hand them on. The controller itself is
//! tested against kube's mock API service (`src/cluster/controller/tests.rs`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support;
use crate::support::documents::JobDoc;
use crate::support::job::{Job, TRAIN_ENV, lines, text};
use sedna::cluster::agent::step;
use sedna::cluster::{RoundData, WorkerReport, condition};
use sedna::learn::LocalJob;
use sedna::plugin::PluginStore;
use sedna::spec::{ClockTime, ConditionType, IncrementalLearningJob, JobCondition, Stage};

fn noon() -> ClockTime {
    ClockTime::new(12, 0).unwrap()
}

fn stage(condition: &JobCondition) -> (&str, &str) {
    (condition.stage.as_str(), condition.kind.as_str())
}

fn data(condition: &JobCondition) -> RoundData {
    serde_json::from_str(condition.data.as_deref().unwrap()).unwrap()
}

/// `sedna worker <role>` with the controller's env (the template's entries as
/// `SEDNA_PARAMETERS`), and the report it wrote for the termination message.
fn worker(job: &Job, role: &str, env: &[(&str, &str)]) -> (Output, Option<WorkerReport>) {
    let report = job.root().join(format!("{role}-report.json"));
    let _ = std::fs::remove_file(&report);
    let parameters: Vec<serde_json::Value> = TRAIN_ENV
        .iter()
        .map(|(k, v)| serde_json::json!({"key": k, "value": v}))
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_sedna"))
        .args(["worker", role])
        .env(
            "SEDNA_PARAMETERS",
            serde_json::Value::from(parameters).to_string(),
        )
        .env("SEDNA_REPORT_PATH", &report)
        .env("SEDNA_HOME", job.root().join("home"))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let written = std::fs::read_to_string(&report)
        .ok()
        .map(|r| serde_json::from_str(&r).unwrap());
    (out, written)
}

/// The job as the controller leaves it when round `round`'s eval Pod succeeded with
/// `report`: the agent's turn to decide.
fn eval_completed(job: &Job, round: &RoundData, report: &WorkerReport) -> IncrementalLearningJob {
    let evaluated = RoundData {
        report: Some(serde_json::to_value(report).unwrap()),
        ..round.clone()
    };
    JobDoc::of(job)
        .started()
        .then(
            Stage::Eval,
            ConditionType::Completed,
            "PodSucceeded",
            &evaluated,
        )
        .doc()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn an_agent_decided_round_trains_evaluates_and_deploys_through_the_workers() {
    let mut job = Job::new(TRAIN_ENV, "accuracy_delta");
    let mut agent = job.deciding();
    let waiting = JobDoc::of(&job).started().doc();
    job.append(12, "");
    assert!(
        step(&mut agent, &waiting, true, noon()).unwrap().is_none(),
        "12 samples do not fire `> 20`"
    );
    job.append(20, "");
    assert!(
        step(&mut agent, &waiting, false, noon()).unwrap().is_none(),
        "not before the check period"
    );
    let ready = step(&mut agent, &waiting, true, noon()).unwrap().unwrap();
    assert_eq!(stage(&ready), ("Train", "Ready"));
    let round = data(&ready);
    assert_eq!(round.round, 1);
    assert_eq!(
        lines(Path::new(&round.train_dataset_url)),
        24,
        "trainProb 0.75 of 32"
    );
    assert_eq!(lines(Path::new(&round.test_dataset_url)), 8);
    assert_eq!(
        round.base_model_url,
        path(&job.root().join("models/base.onnx"))
    );
    assert_eq!(
        round.model_url,
        path(&job.root().join("out/train/1/model.onnx"))
    );
    // Handed over: until the controller moves, the agent has nothing to do.
    let handed = JobDoc::of(&job)
        .started()
        .then_condition(ready.clone())
        .doc();
    assert!(step(&mut agent, &handed, true, noon()).unwrap().is_none());

    // The train Pod.
    let (out, report) = worker(
        &job,
        "train",
        &[
            ("BASE_MODEL_URL", &round.base_model_url),
            ("TRAIN_DATASET_URL", &round.train_dataset_url),
            ("MODEL_URL", &round.model_url),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = report.expect("the train worker wrote its report");
    assert_eq!(report.samples, 24);
    assert_eq!(report.models[0].metrics["loss"].len(), 20, "epochs = 20");
    sedna::media::Model::load(Path::new(&round.model_url)).unwrap();
    let printed: WorkerReport = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(printed, report, "the report is printed too");

    // The eval Pod: the new model, then the deployed one.
    let urls = format!("{};{}", round.model_url, round.base_model_url);
    let (out, report) = worker(
        &job,
        "eval",
        &[
            ("MODEL_URLS", &urls),
            ("TEST_DATASET_URL", &round.test_dataset_url),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = report.expect("the eval worker wrote its report");
    assert_eq!(report.samples, 8);
    let [new, old] = [&report.models[0], &report.models[1]].map(|m| m.metrics["accuracy"][0]);
    assert_eq!(report.models[1].url, round.base_model_url);
    assert!(new > old + 0.2, "accuracy {old} -> {new}");

    // The controller records the eval Pod's report; the agent decides.
    let completed = eval_completed(&job, &round, &report);
    let decided = step(&mut agent, &completed, false, noon())
        .unwrap()
        .unwrap();
    assert_eq!(stage(&decided), ("Deploy", "Ready"));
    assert!(
        decided
            .message
            .as_deref()
            .unwrap()
            .contains("accuracy_delta"),
        "{decided:?}"
    );
    assert_eq!(
        std::fs::read(&round.model_url).unwrap(),
        std::fs::read(job.root().join("deploy/model.onnx")).unwrap(),
        "the deploy model is the trained one"
    );
    // Decided once.
    assert!(
        step(&mut agent, &completed, true, noon())
            .unwrap()
            .is_none()
    );

    // The next round starts from the deployed model.
    let deployed = JobDoc::of(&job)
        .started()
        .then(
            Stage::Deploy,
            ConditionType::Completed,
            "ModelDeployed",
            &round,
        )
        .doc();
    assert!(
        step(&mut agent, &deployed, true, noon()).unwrap().is_none(),
        "no new samples"
    );
    job.append(21, "");
    let next = step(&mut agent, &deployed, true, noon()).unwrap().unwrap();
    assert_eq!(data(&next).round, 2);
    assert_eq!(
        data(&next).base_model_url,
        path(&job.root().join("deploy/model.onnx"))
    );
}

#[test]
fn with_its_files_in_buckets_a_round_trains_and_evaluates_on_another_node() {
    use crate::support::s3::started;
    use sedna::storage::{Location, Storage};
    let Some(server) = started(&["data", "models", "runs"]) else {
        return;
    };
    let storage = Storage::new(Some(server.credentials(None)), sedna::storage::RETRY);
    let read = |url: &str| {
        storage
            .read(&Location::parse(url).unwrap(), 0, None)
            .unwrap()
            .0
    };
    let mut job = Job::new(TRAIN_ENV, "accuracy_delta");
    job.append(32, "");
    job.move_to_buckets(&server, Some(server.port), true);
    let mut agent = job.deciding();
    let waiting = JobDoc::of(&job).started().doc();
    let ready = step(&mut agent, &waiting, true, noon()).unwrap().unwrap();
    let round = data(&ready);
    let output = crate::support::job::BUCKET_OUTPUT;
    assert_eq!(
        round.train_dataset_url,
        format!("{output}/data/train/1/train.txt")
    );
    assert_eq!(round.model_url, format!("{output}/train/1/model.onnx"));
    assert_eq!(round.base_model_url, "s3://models/base.onnx");
    // The round's index names its images by URL: any node can read them.
    let index = read(&round.train_dataset_url);
    let first = String::from_utf8_lossy(&index)
        .lines()
        .next()
        .unwrap()
        .to_string();
    assert!(first.starts_with("s3://data/colours/"), "{first}");

    // The stages on another node: its own data directory, the Secret's keys as env.
    let elsewhere = job.root().join("gpu-node");
    let home = elsewhere.to_str().unwrap();
    let vars = server.vars(None);
    let mut env: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("SEDNA_HOME", home));
    let train: Vec<(&str, &str)> = [
        ("BASE_MODEL_URL", round.base_model_url.as_str()),
        ("TRAIN_DATASET_URL", round.train_dataset_url.as_str()),
        ("MODEL_URL", round.model_url.as_str()),
    ]
    .into_iter()
    .chain(env.iter().copied())
    .collect();
    let (out, report) = worker(&job, "train", &train);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(report.unwrap().samples, 24);
    let trained = read(&round.model_url);
    assert!(
        storage
            .manifest(&Location::parse(&round.model_url).unwrap())
            .unwrap()
            .is_some(),
        "published with its manifest"
    );
    let urls = format!("{};{}", round.model_url, round.base_model_url);
    let eval: Vec<(&str, &str)> = [
        ("MODEL_URLS", urls.as_str()),
        ("TEST_DATASET_URL", round.test_dataset_url.as_str()),
    ]
    .into_iter()
    .chain(env.iter().copied())
    .collect();
    let (out, report) = worker(&job, "eval", &eval);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = report.unwrap();
    assert_eq!(report.samples, 8);
    assert!(
        !job.root().join("out").exists(),
        "nothing on the data's node but its state"
    );

    // The agent decides and deploys the model the train worker published.
    let completed = eval_completed(&job, &round, &report);
    let decided = step(&mut agent, &completed, false, noon())
        .unwrap()
        .unwrap();
    assert_eq!(stage(&decided), ("Deploy", "Ready"));
    assert_eq!(read("s3://models/deployed.onnx"), trained);
}

#[test]
fn a_failed_stage_is_tried_again_at_the_next_check_and_a_bad_report_fails_eval() {
    let mut job = Job::new(TRAIN_ENV, "accuracy_delta");
    let mut agent = job.deciding();
    job.append(25, "");
    let ready = step(&mut agent, &JobDoc::of(&job).started().doc(), true, noon())
        .unwrap()
        .unwrap();
    let round = data(&ready);
    let failed = JobDoc::of(&job)
        .started()
        .then_condition(condition(
            Stage::Train,
            ConditionType::Failed,
            "PodFailed",
            "OOMKilled",
            Some(&round),
        ))
        .doc();
    assert!(
        step(&mut agent, &failed, false, noon()).unwrap().is_none(),
        "not before the check period"
    );
    let again = step(&mut agent, &failed, true, noon()).unwrap().unwrap();
    assert_eq!(stage(&again), ("Train", "Ready"));
    assert_eq!(data(&again), round, "the same round, with the same files");
    assert!(
        again.message.as_deref().unwrap().contains("again"),
        "{again:?}"
    );

    let eval_failed = JobDoc::of(&job)
        .started()
        .then_condition(condition(
            Stage::Eval,
            ConditionType::Failed,
            "PodFailed",
            "Error",
            Some(&round),
        ))
        .doc();
    let again = step(&mut agent, &eval_failed, true, noon())
        .unwrap()
        .unwrap();
    assert_eq!(stage(&again), ("Eval", "Ready"));

    let nonsense = RoundData {
        report: Some(serde_json::json!("Completed (exit code 0)")),
        ..round.clone()
    };
    let completed = JobDoc::of(&job)
        .started()
        .then(
            Stage::Eval,
            ConditionType::Completed,
            "PodSucceeded",
            &nonsense,
        )
        .doc();
    let refused = step(&mut agent, &completed, true, noon()).unwrap().unwrap();
    assert_eq!(stage(&refused), ("Eval", "Failed"));
    assert!(
        refused
            .message
            .as_deref()
            .unwrap()
            .contains("sedna worker eval"),
        "{refused:?}"
    );
    assert!(!job.root().join("deploy/model.onnx").exists());
}

/// The job with a `HardExampleRatio` plugin ANDed with its train condition.
fn with_ratio_plugin(job: &Job, ratio: &str) {
    job.edit(
        r#"condition: {operator: ">", threshold: 20, metric: num_of_samples}"#,
        &format!(
            r#"condition: {{operator: ">", threshold: 20, metric: num_of_samples}}
      plugins: [{{name: HardExampleRatio, parameters: [{{key: window, value: "4"}}, {{key: ratio, value: "{ratio}"}}]}}]"#
        ),
    );
}

#[test]
fn a_trigger_plugin_in_the_job_reads_the_inference_pods_decisions_on_the_node() {
    let mut job = Job::new(TRAIN_ENV, "accuracy_delta");
    with_ratio_plugin(&job, "0.5");
    let mut agent = job.deciding();
    let waiting = JobDoc::of(&job).started().doc();
    job.append(32, "");
    assert!(
        step(&mut agent, &waiting, true, noon()).unwrap().is_none(),
        "no decisions yet: the plugin cannot say"
    );

    // The inference Pod logs its frames in the job's output directory on this node.
    let results = job.root().join("out/inference");
    std::fs::create_dir_all(&results).unwrap();
    let log = |hard: &[bool]| {
        let mut text = std::fs::read_to_string(results.join("results.jsonl")).unwrap_or_default();
        for (i, hard) in hard.iter().enumerate() {
            text.push_str(&format!(
                "{{\"frame\": \"f{i}\", \"hard\": {hard}, \"prediction\": []}}\n"
            ));
        }
        text.push_str("{\"frame\": \"broken\", \"error\": \"cannot decode\"}\n");
        std::fs::write(results.join("results.jsonl"), text).unwrap();
    };
    log(&[true, false, false, false]);
    assert!(
        step(&mut agent, &waiting, true, noon()).unwrap().is_none(),
        "32 samples, but 1 hard frame of the last 4 is not more than 0.5"
    );
    log(&[true, true, true]);
    let ready = step(&mut agent, &waiting, true, noon()).unwrap().unwrap();
    assert_eq!(stage(&ready), ("Train", "Ready"));
    assert!(
        ready
            .message
            .as_deref()
            .unwrap()
            .contains("HardExampleRatio"),
        "{ready:?}"
    );
}

#[test]
fn a_trigger_plugin_that_is_missing_or_refuses_its_parameters_stops_the_job_at_load() {
    let job = Job::new(TRAIN_ENV, "accuracy_delta");
    let store = PluginStore::open(&job.root().join("home")).unwrap();
    let opened = |job: &Job| {
        let resources = sedna::spec::load(std::slice::from_ref(&job.yaml)).unwrap();
        LocalJob::open_deciding(&resources, None, support::runtime(), &store)
            .err()
            .map(|e| format!("{e:#}"))
            .expect("the job does not open")
    };
    with_ratio_plugin(&job, "1.5");
    let error = opened(&job);
    assert!(
        error.contains("field `spec.trainSpec.trigger.plugins[0]`")
            && error.contains("`ratio`")
            && error.contains("1.5"),
        "{error}"
    );
    let ratio = r#"{name: HardExampleRatio, parameters: [{key: window, value: "4"}, {key: ratio, value: "1.5"}]}"#;
    job.edit(ratio, &vec![ratio; 16].join(", "));
    let error = opened(&job);
    assert!(
        error.contains("field `spec.trainSpec.trigger.plugins`")
            && error.contains("at most 16 conditions"),
        "{error}"
    );
    job.edit(&vec![ratio; 16].join(", "), ratio);
    job.edit("name: HardExampleRatio", "name: NoSuchCondition");
    let error = opened(&job);
    assert!(
        error.contains("field `spec.trainSpec.trigger.plugins[0].name`")
            && error.contains("NoSuchCondition"),
        "{error}"
    );
}

#[test]
fn workers_say_which_env_variable_or_file_is_wrong() {
    let mut job = Job::new(TRAIN_ENV, "accuracy_delta");
    let (out, report) = worker(&job, "train", &[]);
    assert!(!out.status.success());
    assert!(report.is_none());
    assert!(
        text(&out.stderr).contains("BASE_MODEL_URL is not set"),
        "{}",
        text(&out.stderr)
    );

    let empty = job.root().join("empty.txt");
    std::fs::write(&empty, "# nothing yet\n").unwrap();
    let base = job.root().join("models/base.onnx");
    let (out, _) = worker(
        &job,
        "eval",
        &[
            ("MODEL_URLS", path(&base)),
            ("TEST_DATASET_URL", path(&empty)),
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("holds no samples"),
        "{}",
        text(&out.stderr)
    );

    job.append(4, "");
    let (out, _) = worker(
        &job,
        "eval",
        &[
            ("MODEL_URLS", "/no/such/model.onnx"),
            ("TEST_DATASET_URL", path(&job.index)),
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("MODEL_URLS: /no/such/model.onnx"),
        "{}",
        text(&out.stderr)
    );
}

/// Waits up to a minute for `done`.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_inference_worker_serves_mines_and_swaps_to_a_deployed_model() {
    let mut job = Job::new(TRAIN_ENV, "accuracy_delta");
    job.append(6, "");
    let root = job.root().to_path_buf();
    let deployed = root.join("deploy/model.onnx");
    let log = root.join("infer.log");
    let parameters = serde_json::json!([{"key": "video_url", "value": path(&root.join("data"))}]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_sedna"))
        .args(["worker", "infer"])
        .env("SEDNA_HOME", root.join("home"))
        .env("SEDNA_LOG", "sedna=info")
        .env("SEDNA_PARAMETERS", parameters.to_string())
        .env("MODEL_URL", &deployed)
        .env("BASE_MODEL_URL", root.join("models/base.onnx"))
        .env("HEM_NAME", "CloudOnly")
        .env("HEM_PARAMETERS", "{}")
        .env("MODEL_HOT_UPDATE", "true")
        .env("MODEL_POLL_PERIOD_SECONDS", "1")
        .env("OUTPUT_DIR", root.join("out"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let said = || std::fs::read_to_string(&log).unwrap_or_default();
    let hard: PathBuf = root.join("out/hard_examples");
    let count = |dir: &Path| std::fs::read_dir(dir).map_or(0, |d| d.count());
    wait_for("hard examples", || {
        count(&hard) > 0 || child.try_wait().unwrap().is_some()
    });
    assert!(
        child.try_wait().unwrap().is_none(),
        "the worker exited: {}",
        said()
    );
    assert!(
        said().contains("models/base.onnx"),
        "serves the base model first: {}",
        said()
    );

    std::fs::create_dir_all(deployed.parent().unwrap()).unwrap();
    std::fs::copy(root.join("models/base.onnx"), &deployed).unwrap();
    wait_for("the swap", || said().contains("now serving"));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        lines(&root.join("out/inference/results.jsonl")) >= 6,
        "{}",
        said()
    );
}

/// For users with a cluster: the controller's first steps against the current kube
/// context (`kubectl apply -f deploy/crds.yaml` first). It makes a namespace of its own
/// and deletes it at the end. No API server can be installed where this project is built,
/// so CI skips it: `cargo test -p sedna --test it -- --ignored cluster::`.
#[test]
#[ignore = "needs a Kubernetes cluster: the current kube context, with deploy/crds.yaml applied"]
fn the_controller_against_the_current_kube_context() {
    use k8s_openapi::api::core::v1::{Namespace, Pod};
    use kube::api::{DeleteParams, ListParams, PostParams};
    use kube::{Api, ResourceExt};
    use sedna::cluster::controller::{Context, reconcile};
    use std::sync::Arc;

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = kube::Client::try_default().await.expect("a kube context");
        let namespace = format!("sedna-test-{}", std::process::id());
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let mut ns = Namespace::default();
        ns.metadata.name = Some(namespace.clone());
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();

        let text = include_str!("../data/quick-start.yaml");
        let resources = sedna::spec::parse(Path::new("quick-start.yaml"), text).unwrap();
        let post = PostParams::default();
        for dataset in &resources.datasets {
            Api::namespaced(client.clone(), &namespace)
                .create(&post, dataset)
                .await
                .unwrap();
        }
        for model in &resources.models {
            Api::namespaced(client.clone(), &namespace)
                .create(&post, model)
                .await
                .unwrap();
        }
        let jobs: Api<IncrementalLearningJob> = Api::namespaced(client.clone(), &namespace);
        let name = resources.jobs[0].name_any();
        jobs.create(&post, &resources.jobs[0]).await.unwrap();

        let context = Arc::new(Context::new(client.clone(), vec!["/".into()]));
        // The finalizer, then the inference Pod and `Train Waiting`.
        for _ in 0..2 {
            let job = jobs.get(&name).await.unwrap();
            reconcile(Arc::new(job), context.clone()).await.unwrap();
        }
        let job = jobs.get(&name).await.unwrap();
        assert!(
            job.finalizers()
                .contains(&sedna::cluster::controller::FINALIZER.to_string())
        );
        let last = job.status.unwrap().conditions.pop().unwrap();
        assert_eq!(
            (last.stage.as_str(), last.kind.as_str()),
            ("Train", "Waiting")
        );
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let selector = ListParams::default().labels(&format!("sedna.io/job={name}"));
        assert_eq!(pods.list(&selector).await.unwrap().items.len(), 1);

        jobs.delete(&name, &DeleteParams::default()).await.unwrap();
        let job = jobs.get(&name).await.unwrap();
        reconcile(Arc::new(job), context.clone()).await.unwrap();
        assert!(
            jobs.get_opt(&name).await.unwrap().is_none(),
            "the finalizer let the job go"
        );
        namespaces
            .delete(&namespace, &DeleteParams::default())
            .await
            .unwrap();
    });
}

/// The agent against kube's mock API service: what it writes, and that it writes a move
/// once even when its cache has not caught up with its own write.
#[test]
fn the_agent_writes_its_move_and_the_sample_count_to_the_status_subresources() {
    use http::{Method, Request, Response};
    use kube::client::Body;
    use sedna::cluster::agent::{Agent, Snapshot};
    use std::sync::Arc;

    let mut job = Job::new(TRAIN_ENV, "accuracy_delta");
    job.append(25, "");
    let mut resources = sedna::spec::load(std::slice::from_ref(&job.yaml)).unwrap();
    let mut resource = JobDoc::of(&job).started().in_namespace("edge").doc();
    resource.metadata.uid = Some("5a1e".into());
    resource.metadata.resource_version = Some("7".into());
    for meta in resources
        .models
        .iter_mut()
        .map(|m| &mut m.metadata)
        .chain(resources.datasets.iter_mut().map(|d| &mut d.metadata))
    {
        meta.namespace = Some("edge".into());
    }
    let snapshot = Snapshot {
        jobs: vec![Arc::new(resource)],
        datasets: resources.datasets.into_iter().map(Arc::new).collect(),
        models: resources.models.into_iter().map(Arc::new).collect(),
    };
    // What the API server answers the two patches with.
    let (job_reply, dataset_reply) = (
        serde_json::to_value(&*snapshot.jobs[0]).unwrap(),
        serde_json::to_value(&*snapshot.datasets[0]).unwrap(),
    );
    let store = || PluginStore::open(&job.root().join("home")).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let plugins = support::runtime();
        let elsewhere = Agent::new(client.clone(), "other", None, plugins.clone(), store());
        let here = Agent::new(client, "edge", None, plugins.clone(), store());
        let agents = async move {
            let mut agents = [elsewhere, here];
            for agent in &mut agents {
                agent.pass(&snapshot).await;
            }
            // The same snapshot after the check period (1 s): the cache has not seen the
            // agent's write yet, and the round it started must not be handed over twice.
            tokio::time::sleep(Duration::from_millis(1100)).await;
            agents[1].pass(&snapshot).await;
        };
        let api = async move {
            let mut expect = async |path: &str, reply: &serde_json::Value| {
                let (request, send) = handle.next_request().await.expect("a request");
                assert_eq!(request.method(), Method::PATCH);
                assert_eq!(request.uri().path_and_query().unwrap().as_str(), path);
                let body = request.into_body().collect_bytes().await.unwrap();
                send.send_response(Response::new(Body::from(reply.to_string().into_bytes())));
                serde_json::from_slice::<serde_json::Value>(&body).unwrap()
            };
            let base = "/apis/sedna.io/v1alpha1/namespaces/edge";
            let path = format!("{base}/incrementallearningjobs/colour-job/status?");
            let patch = expect(&path, &job_reply).await;
            assert_eq!(
                patch["metadata"]["resourceVersion"], "7",
                "over what it read"
            );
            let conditions = patch["status"]["conditions"].as_array().unwrap();
            let last: JobCondition = serde_json::from_value(conditions[1].clone()).unwrap();
            assert_eq!(stage(&last), ("Train", "Ready"));
            let train = data(&last).train_dataset_url;
            assert_eq!(
                lines(Path::new(&train)),
                19,
                "trainProb 0.75 of 25, rounded"
            );
            let path = format!("{base}/datasets/colours/status?");
            let patch = expect(&path, &dataset_reply).await;
            assert_eq!(patch["status"]["numberOfSamples"], 25);
            assert!(handle.next_request().await.is_none(), "one write per move");
        };
        futures::join!(agents, api);
    });
}
