//! The job's inference worker, built from its deploy template: the frame source
//! (`video_url`), the serving model, the estimator, the HEM and where hard examples go.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::estimator::{FRAME_DEADLINE, estimator_on};
use super::layout::OutputLayout;
use crate::media::rtsp::Transport;
use crate::pipeline::camera::Backoff;
use crate::pipeline::{
    CameraOptions, FrameSink as _, FrameSource, HardExampleStore, HardExampleUpload,
    InferenceWorker, ResultLog, SourceOptions,
};
use crate::plugin::{
    Hem, Param, Plugin, PluginStore, Runtime, Sandbox, Slot, Source, params, setting,
};
use crate::spec::PluginRef;
use crate::storage::Storage;

/// Size of the inference results file before it is rotated (one old file is kept).
const RESULTS_MAX_BYTES: u64 = 64 << 20;
/// The most memory a HEM call may be given (`hem_memory_mib`).
const MAX_PLUGIN_MEMORY: u64 = 64 << 30;
/// Hard examples kept on disk before the oldest are deleted.
const HARD_EXAMPLES_KEPT: usize = 10_000;

/// An inference worker and the frames it reads (until the caller takes them to feed the
/// worker on a thread of its own).
pub struct Serving {
    pub worker: Arc<InferenceWorker>,
    pub source: Option<FrameSource>,
}

/// What the inference worker is made of.
pub struct ServingPlan<'a> {
    /// The job's name, for errors.
    pub job: &'a str,
    /// The deploy template's parameters: `video_url` (an RTSP camera, a folder of images
    /// or an MP4 file), `every_nth_frame`, `video_realtime` (`"false"` plays a video as
    /// fast as the worker goes), a camera's `rtsp_transport` (`tcp`, `udp`),
    /// `stall_seconds`, `reconnect_first_ms`, `reconnect_max_seconds`,
    /// `reconnect_attempts` and `max_fps`,
    /// `hem_deadline_ms` and `hem_memory_mib` (bounds of each HEM call),
    /// `HE_SAVED_URL`; the estimator's parameters too.
    pub deploy_params: &'a [Param],
    /// The job's `hardExampleMining`.
    pub mining: &'a PluginRef,
    pub estimator: &'a Source,
    /// The model to serve.
    pub model: &'a Path,
    pub layout: &'a OutputLayout,
    /// Where hard examples are uploaded from, when `HE_SAVED_URL` is `s3://`.
    pub storage: &'a Arc<Storage>,
}

impl ServingPlan<'_> {
    /// The worker, or `None` when the template names no source (or one that cannot be
    /// opened: the job runs without a worker, and says so). A bad value is an error.
    pub fn open(&self, runtime: &Runtime, store: &PluginStore) -> anyhow::Result<Option<Serving>> {
        let setting = |key: &str| setting(self.deploy_params, key).map(str::to_string);
        let Some(url) = setting("video_url") else {
            return Ok(None);
        };
        let every = self.count("every_nth_frame", 1)? as usize;
        let hem_sandbox = Sandbox {
            deadline: Duration::from_millis(self.count(
                "hem_deadline_ms",
                Sandbox::default().deadline.as_millis() as u64,
            )?),
            memory: self.mebibytes("hem_memory_mib", Sandbox::default().memory >> 20)?,
            ..Sandbox::default()
        };
        let realtime = match setting("video_realtime").as_deref().map(str::trim) {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => anyhow::bail!(
                "IncrementalLearningJob {}, deploy template env `video_realtime` is {other:?}: give \"true\" or \"false\"",
                self.job
            ),
        };
        let transport = match setting("rtsp_transport") {
            None => Transport::Tcp,
            Some(text) => text.parse().map_err(|e| {
                anyhow::anyhow!(
                    "IncrementalLearningJob {}, deploy template env `rtsp_transport` is {e}",
                    self.job
                )
            })?,
        };
        let defaults = CameraOptions::default();
        let camera = CameraOptions {
            transport,
            stall: Duration::from_secs(self.count("stall_seconds", defaults.stall.as_secs())?),
            backoff: Backoff {
                first: Duration::from_millis(self.count(
                    "reconnect_first_ms",
                    defaults.backoff.first.as_millis() as u64,
                )?),
                max: Duration::from_secs(
                    self.count("reconnect_max_seconds", defaults.backoff.max.as_secs())?,
                ),
            },
            max_fps: match setting("max_fps") {
                None => None,
                Some(text) => Some(
                    text.trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|fps| fps.is_finite() && *fps > 0.0)
                        .with_context(|| {
                            format!(
                                "IncrementalLearningJob {}, deploy template env `max_fps` is {text:?}: give a number of frames a second above 0",
                                self.job
                            )
                        })?,
                ),
            },
            attempts: match setting("reconnect_attempts") {
                None => None,
                Some(_) => Some(self.count("reconnect_attempts", 1)? as u32),
            },
            ..defaults
        };
        let options = SourceOptions {
            every,
            realtime,
            camera,
        };
        // A source that cannot be opened yet does not stop the job: the worker starts,
        // says why in its status and metrics, and the source is tried again.
        let (source, unopened) = FrameSource::open_or_retry(&url, &options);
        let hem_source = store.resolve(&self.mining.name).with_context(|| {
            format!(
                "IncrementalLearningJob {}, field `spec.deploySpec.hardExampleMining.name`",
                self.job
            )
        })?;
        let hem = Plugin::<Hem>::load(
            runtime,
            &hem_source,
            params(&self.mining.parameters),
            hem_sandbox,
        )?;
        // A directory of its own: the serving estimator sees none of the job's files.
        let scratch = self.layout.results_dir().join("estimator");
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("cannot create {}", scratch.display()))?;
        let estimator = estimator_on(
            runtime,
            self.estimator,
            self.deploy_params,
            self.model,
            &scratch,
            FRAME_DEADLINE,
        )?;
        let hard_examples = self.layout.hard_examples(self.deploy_params);
        let mut store = HardExampleStore::open(&hard_examples, HARD_EXAMPLES_KEPT)?;
        if let Some(to) = self
            .layout
            .hard_examples_upload(self.deploy_params)
            .with_context(|| format!("IncrementalLearningJob {}", self.job))?
        {
            store = store.with_upload(HardExampleUpload::start(
                &hard_examples,
                crate::pipeline::hard_examples::INDEX,
                to,
                self.storage.clone(),
            )?);
        }
        let worker =
            InferenceWorker::new(Slot::new(estimator), Slot::new(hem), store).with_results(
                ResultLog::new(&self.layout.results_dir(), RESULTS_MAX_BYTES)?,
            );
        if let FrameSource::Cameras(cameras) = &source {
            worker.watch_cameras(cameras.watch());
        }
        if let Some(why) = unopened {
            tracing::warn!(
                job = %self.job,
                "deploy template env `video_url`: {why}; the worker waits for it (tried again every {} s)",
                crate::pipeline::source::RETRY_PAUSE.as_secs()
            );
            worker.source(Some(&why));
        }
        Ok(Some(Serving {
            worker: Arc::new(worker),
            source: Some(source),
        }))
    }

    /// The deploy template's entry `key`, a size in MiB (or `default`), in bytes; one too
    /// large to be a size is refused rather than wrapped.
    fn mebibytes(&self, key: &str, default: u64) -> anyhow::Result<u64> {
        let mib = self.count(key, default)?;
        mib.checked_mul(1 << 20)
            .filter(|&bytes| bytes <= MAX_PLUGIN_MEMORY)
            .with_context(|| {
                format!(
                    "IncrementalLearningJob {}, deploy template env `{key}` is {mib} MiB: give at most {} MiB",
                    self.job,
                    MAX_PLUGIN_MEMORY >> 20
                )
            })
    }

    /// The deploy template's entry `key`: a whole number >= 1, or `default` when absent.
    fn count(&self, key: &str, default: u64) -> anyhow::Result<u64> {
        match setting(self.deploy_params, key) {
            None => Ok(default),
            Some(n) => n.trim().parse::<u64>().ok().filter(|n| *n >= 1).with_context(|| {
                format!(
                    "IncrementalLearningJob {}, deploy template env `{key}` is {n:?}: give a whole number >= 1",
                    self.job
                )
            }),
        }
    }
}
