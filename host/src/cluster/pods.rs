//! The Pods a job runs, made from its pod templates: Sedna's env variables, the host
//! directories the paths in them name, the job as their owner.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    EnvVar, EnvVarSource, HostPathVolumeSource, Pod, PodSpec, PodTemplateSpec, SecretKeySelector,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use super::env::{CommonEnv, Env};
use crate::spec::{self, IncrementalLearningJob, Stage};
use crate::storage;

/// The label that ties a Pod to its job (the controller lists Pods by it); its value is
/// [`job_label`].
pub const JOB_LABEL: &str = "sedna.io/job";
/// `train`, `eval` or `infer`.
pub const WORKER_LABEL: &str = "sedna.io/worker";
/// The round a train or eval Pod belongs to.
pub const ROUND_LABEL: &str = "sedna.io/round";

/// A credential Secret's keys a worker gets as env (Sedna's names), and whether the
/// Secret may lack it.
const SECRET_KEYS: [(&str, bool); 5] = [
    (storage::ACCESS_KEY_ID, false),
    (storage::SECRET_ACCESS_KEY, false),
    (storage::S3_ENDPOINT_URL, true),
    (storage::S3_USE_HTTPS, true),
    (storage::S3_REGION, true),
];

/// Longest label value Kubernetes accepts.
const MAX_LABEL_VALUE: usize = 63;
/// Longest object name (a DNS subdomain).
const MAX_NAME: usize = 253;

/// The [`JOB_LABEL`] value of a job: its name, or for a name longer than a label value
/// may be (a job's name may be 253 characters), its first 54 characters, `_` and a hash
/// of the whole name. Two long names stay apart, and no job can be named like a long
/// one's label (`_` is not allowed in names), so a label never selects another job's Pods.
pub fn job_label(job_name: &str) -> String {
    long_name(job_name, '_')
}

/// `name` if it fits a label value, else its first characters, `separator` and a hash.
fn long_name(name: &str, separator: char) -> String {
    if name.len() <= MAX_LABEL_VALUE {
        return name.to_string();
    }
    use sha2::Digest as _;
    let hash = hex::encode(&sha2::Sha256::digest(name.as_bytes())[..4]);
    // A label value ends in a letter or a digit; Kubernetes names are ASCII.
    let prefix: String = name
        .chars()
        .take(MAX_LABEL_VALUE - hash.len() - 1)
        .collect();
    format!("{}{separator}{hash}", prefix.trim_end_matches(['-', '.']))
}

/// The workers a job's Pods run (`sedna worker train|eval|infer`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Worker {
    Train,
    Eval,
    Infer,
}

impl Worker {
    pub fn name(self) -> &'static str {
        match self {
            Worker::Train => "train",
            Worker::Eval => "eval",
            Worker::Infer => "infer",
        }
    }

    /// The stage of the job's conditions this worker's Pod moves.
    pub fn stage(self) -> Stage {
        match self {
            Worker::Train => Stage::Train,
            Worker::Eval => Stage::Eval,
            Worker::Infer => Stage::Deploy,
        }
    }

    /// `<job>-train-<round>`, `<job>-eval-<round>`, `<job>-infer`; for a job whose name
    /// leaves no room for that (a name is at most 253 characters), a shortened name
    /// (as [`job_label`], with `-`: a Pod's name allows no `_`).
    pub fn pod_name(self, job: &str, round: Option<u64>) -> String {
        let suffix = match round {
            Some(round) => format!("-{}-{round}", self.name()),
            None => format!("-{}", self.name()),
        };
        if job.len() + suffix.len() <= MAX_NAME {
            format!("{job}{suffix}")
        } else {
            format!("{}{suffix}", long_name(job, '-'))
        }
    }

    fn template(self, job: &IncrementalLearningJob) -> &PodTemplateSpec {
        match self {
            Worker::Train => &job.spec.train_spec.template,
            Worker::Eval => &job.spec.eval_spec.template,
            Worker::Infer => &job.spec.deploy_spec.template,
        }
    }
}

/// What a worker's Pod needs besides its template.
pub struct PodPlan<'a> {
    pub worker: Worker,
    pub round: Option<u64>,
    /// Sedna's env variables for this worker (they replace template entries of the same name).
    pub env: Env,
    /// The dataset's node, where the data and the job's output live; a template's own
    /// `nodeName` wins.
    pub node: Option<&'a str>,
    /// Host directories mounted at the same path (the paths in `env` are on the node).
    pub host_dirs: &'a [PathBuf],
    /// The job's `outputDir` when it is on the node: the one directory its Pods write, so
    /// the others are mounted read-only.
    pub output: Option<&'a Path>,
    /// The Secret (a `credentialName`) whose object-storage keys the worker gets as env.
    pub secret: Option<&'a str>,
}

/// The Pod for `plan` of `job`, owned by the job (deleted with it).
pub fn pod(job: &IncrementalLearningJob, plan: &PodPlan) -> Pod {
    let worker = plan.worker;
    let template = worker.template(job);
    let job_name = job.name_any();
    let mut metadata = template.metadata.clone().unwrap_or_default();
    let labels = metadata.labels.get_or_insert_with(Default::default);
    labels.insert(JOB_LABEL.into(), job_label(&job_name));
    labels.insert(WORKER_LABEL.into(), worker.name().into());
    if let Some(round) = plan.round {
        labels.insert(ROUND_LABEL.into(), round.to_string());
    }
    let metadata = ObjectMeta {
        name: Some(worker.pod_name(&job_name, plan.round)),
        namespace: job.namespace(),
        owner_references: job.controller_owner_ref(&()).map(|o| vec![o]),
        ..metadata
    };

    let mut spec: PodSpec = template.spec.clone().unwrap_or_default();
    if spec.node_name.is_none() {
        spec.node_name = plan.node.map(str::to_string);
    }
    if spec.restart_policy.is_none() && worker != Worker::Infer {
        // A stage runs once: a failed Pod fails the stage (the agent retries it).
        spec.restart_policy = Some("Never".into());
    }
    let mut env = CommonEnv {
        namespace: job.namespace().unwrap_or_default(),
        job_name: job_name.clone(),
        worker_name: worker.pod_name(&job_name, plan.round),
        parameters: spec::parameters(template),
    }
    .to_env();
    env.extend(plan.env.iter().cloned());

    let volumes: Vec<(String, &PathBuf)> = plan
        .host_dirs
        .iter()
        .enumerate()
        .map(|(i, dir)| (format!("sedna-host-{i}"), dir))
        .collect();
    for container in &mut spec.containers {
        let entries = container.env.get_or_insert_with(Vec::new);
        for (key, value) in &env {
            entries.retain(|e| e.name != *key);
            entries.push(EnvVar {
                name: key.to_string(),
                value: Some(value.clone()),
                value_from: None,
            });
        }
        if let Some(secret) = plan.secret {
            for (key, optional) in SECRET_KEYS {
                entries.retain(|e| e.name != key);
                entries.push(EnvVar {
                    name: key.to_string(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: secret.to_string(),
                            key: key.to_string(),
                            optional: Some(optional),
                        }),
                        ..EnvVarSource::default()
                    }),
                });
            }
        }
        let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
        for (name, dir) in &volumes {
            let path = dir.display().to_string();
            if !mounts.iter().any(|m| m.mount_path == path) {
                let writes = plan.output.is_none_or(|output| output.starts_with(dir));
                mounts.push(VolumeMount {
                    name: name.clone(),
                    mount_path: path,
                    read_only: (!writes).then_some(true),
                    ..VolumeMount::default()
                });
            }
        }
        if container.termination_message_policy.is_none() {
            // The worker writes its report to the termination message; a worker that
            // dies before it can still say why through its last log lines.
            container.termination_message_policy = Some("FallbackToLogsOnError".into());
        }
    }
    let pod_volumes = spec.volumes.get_or_insert_with(Vec::new);
    for (name, dir) in volumes {
        pod_volumes.push(Volume {
            name,
            host_path: Some(HostPathVolumeSource {
                path: dir.display().to_string(),
                type_: Some("DirectoryOrCreate".into()),
            }),
            ..Volume::default()
        });
    }
    Pod {
        metadata,
        spec: Some(spec),
        status: None,
    }
}

/// The directories holding `paths` (files' parents, directories as given), absolute
/// ones only, without any that another one contains.
pub fn host_dirs<'a>(dirs: impl IntoIterator<Item = &'a Path>) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = dirs
        .into_iter()
        .filter(|p| p.is_absolute())
        .map(Path::to_path_buf)
        .collect();
    all.sort();
    all.dedup();
    let kept: Vec<PathBuf> = all
        .iter()
        .filter(|d| !all.iter().any(|o| o != *d && d.starts_with(o)))
        .cloned()
        .collect();
    kept
}

/// A Pod's phase, as Kubernetes reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

impl Phase {
    /// Whether the Pod ended, one way or the other.
    pub fn ended(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// A Pod's phase; a Pod with none yet is `Pending`, one Kubernetes names otherwise
/// `Unknown`.
pub fn phase(pod: &Pod) -> Phase {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        None | Some("Pending") => Phase::Pending,
        Some("Running") => Phase::Running,
        Some("Succeeded") => Phase::Succeeded,
        Some("Failed") => Phase::Failed,
        Some(_) => Phase::Unknown,
    }
}

/// What the Pod's containers said as they ended: the termination messages of those
/// that ended, else their reasons and exit codes.
pub fn termination_message(pod: &Pod) -> String {
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten();
    let said: Vec<String> = statuses
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref())
        .map(|t| match &t.message {
            Some(message) if !message.trim().is_empty() => message.trim().to_string(),
            _ => format!(
                "{} (exit code {})",
                t.reason.as_deref().unwrap_or("terminated"),
                t.exit_code
            ),
        })
        .collect();
    said.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_job_name_makes_a_valid_label_that_keeps_jobs_apart() {
        assert_eq!(job_label("helmet"), "helmet");
        let exact = "j".repeat(63);
        assert_eq!(job_label(&exact), exact);
        let a = format!("{}-a", "x.y-".repeat(30));
        let b = format!("{}-b", "x.y-".repeat(30));
        let (la, lb) = (job_label(&a), job_label(&b));
        assert_ne!(la, lb);
        assert_eq!(la, job_label(&a), "the same name, the same label");
        for label in [&la, &lb] {
            assert!(label.len() <= 63, "{label}");
            assert!(label.starts_with("x.y-x.y"), "{label}");
            let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
            assert!(
                ends(label.chars().next()) && ends(label.chars().last()),
                "{label}"
            );
            assert!(!label.contains("-_") && !label.contains("._"), "{label}");
            assert!(label.contains('_'), "no job can be named {label}");
        }

        assert_eq!(Worker::Train.pod_name("helmet", Some(7)), "helmet-train-7");
        let longest = "j".repeat(253);
        let pod = Worker::Train.pod_name(&longest, Some(7));
        assert!(pod.len() <= 253 && pod.ends_with("-train-7"), "{pod}");
        assert_eq!(
            pod,
            format!("{}-train-7", job_label(&longest).replace('_', "-"))
        );
        assert!(!pod.contains('_'), "{pod}");
    }

    #[test]
    fn host_dirs_keep_the_outermost_absolute_directories() {
        let dirs = host_dirs(
            [
                "/data/out",
                "/data/out/train",
                "/models",
                "relative",
                "/data/outside",
            ]
            .map(Path::new),
        );
        assert_eq!(
            dirs,
            ["/data/out", "/data/outside", "/models"].map(PathBuf::from)
        );
    }
}
