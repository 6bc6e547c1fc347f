//! The `sedna` command line: clap types and dispatch to the layers below. Without the
//! `cluster` feature there are no `controller`, `agent` and `worker` commands; without
//! `server`, no `--listen` and no client for `--host`.

mod label;
mod plugin;
mod predict;
pub mod progress;
mod remote;
mod run;
#[cfg(feature = "server")]
mod serve;
mod train;
#[cfg(feature = "cluster")]
mod worker;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::plugin::compile::ChildCompiler;
use crate::plugin::{Param, PluginStore, Runtime, RuntimeConfig};

#[derive(Parser)]
#[command(
    name = "sedna",
    version,
    about = "Incremental learning on edge devices, with plugins as WebAssembly components"
)]
pub struct Cli {
    /// The data directory (plugin store, compiled-component cache, job state).
    #[arg(long, global = true, env = "SEDNA_HOME", value_name = "DIR")]
    home: Option<PathBuf>,

    /// Seconds a component's compile may take before it is stopped (plugins compile in
    /// a child process, bounded).
    #[arg(long, global = true, env = "SEDNA_COMPILE_TIMEOUT", value_name = "SECS",
          default_value_t = ChildCompiler::TIMEOUT.as_secs_f64())]
    compile_timeout: f64,

    /// MiB of memory a component's compile may use before it is stopped.
    #[arg(long, global = true, env = "SEDNA_COMPILE_MEMORY", value_name = "MIB",
          default_value_t = ChildCompiler::MEMORY >> 20)]
    compile_memory: u64,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect, validate and store plugins (WebAssembly components).
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Run an incremental-learning job from its YAML (Dataset, Model,
    /// IncrementalLearningJob) in this process: no cluster needed.
    Run(run::Run),
    /// Show a job's round, samples, deployed model, metrics and recent conditions (of a
    /// job running on a host with --host).
    Status(run::Status),
    /// Run an estimator on images and print one prediction per line (the input
    /// `sedna plugin test` reads).
    Predict(predict::Predict),
    /// Train a model on a data index with an estimator (the built-in `ONNX` trains the
    /// whole network on this host) and write the trained model.
    Train(train::Train),
    /// An estimator's metrics (mAP, precision, recall, accuracy, ...) of a model on a data
    /// index, as one JSON object.
    Evaluate(train::Evaluate),
    /// Move hard examples to a labelling tool (YOLO, COCO) and the labels back.
    #[command(subcommand)]
    Label(label::LabelCommand),
    /// Show what this host runs on: the ONNX backend, its version and library, the data directory.
    Doctor(Doctor),
    /// Print the CustomResourceDefinitions of Dataset, Model and IncrementalLearningJob
    /// (`sedna crds | kubectl apply -f -`).
    Crds,
    /// On Kubernetes: run IncrementalLearningJobs' Pods and stages (Sedna's
    /// GlobalManager role).
    #[cfg(feature = "cluster")]
    Controller(Controller),
    /// On Kubernetes, one per node: count the samples of the datasets on this node, fire
    /// the train trigger and decide deploys (Sedna's LocalController role).
    #[cfg(feature = "cluster")]
    Agent(Agent),
    /// The worker a job's Pod runs, set up by the controller's env variables.
    #[cfg(feature = "cluster")]
    #[command(subcommand)]
    Worker(worker::WorkerCommand),
    /// Compiles the component on stdin and writes its precompiled form on stdout: the
    /// child every other command compiles in.
    #[command(name = crate::plugin::compile::SUBCOMMAND, hide = true)]
    CompileComponent,
}

impl Command {
    /// Whether the command runs as a service (a job, a Kubernetes role), rather than
    /// printing an answer and ending.
    fn serves(&self) -> bool {
        match self {
            Command::Run(_) => true,
            #[cfg(feature = "cluster")]
            Command::Controller(_) | Command::Agent(_) | Command::Worker(_) => true,
            _ => false,
        }
    }
}

#[derive(clap::Args)]
pub struct Doctor {
    /// Install ONNX Runtime (the PyPI wheel's library, with pip) into the data directory,
    /// where every later `sedna` finds it: several times faster than the built-in tract.
    #[arg(long)]
    install_onnxruntime: bool,
}

#[cfg(feature = "cluster")]
#[derive(clap::Args)]
pub struct Controller {
    /// Only this namespace's jobs (else every namespace's).
    #[arg(long, env = "SEDNA_NAMESPACE")]
    namespace: Option<String>,
    /// A node directory jobs may mount (with what lies under it), as the paths they
    /// name become hostPath volumes; repeat for more. None: only jobs whose files are all
    /// in object storage run.
    #[arg(
        long = "allow-host-path",
        value_name = "DIR",
        env = "SEDNA_ALLOW_HOST_PATHS",
        value_delimiter = ','
    )]
    host_paths: Vec<std::path::PathBuf>,
}

#[cfg(feature = "cluster")]
#[derive(clap::Args)]
pub struct Agent {
    /// This node's name (in a DaemonSet: from the downward API, `spec.nodeName`).
    #[arg(long, env = "NODE_NAME")]
    node: String,
    /// Only this namespace's jobs (else every namespace's).
    #[arg(long, env = "SEDNA_NAMESPACE")]
    namespace: Option<String>,
    /// How often to look at the jobs, in seconds (each job still checks its dataset every
    /// `checkPeriodSeconds`).
    #[arg(long, default_value_t = 5)]
    interval: u64,
}

/// Runs `work` with a Kubernetes client from the Pod's service account or the kubeconfig.
#[cfg(feature = "cluster")]
fn with_cluster<F, Fut>(work: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(kube::Client) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = kube::Client::try_default().await.map_err(|e| {
            anyhow::anyhow!(
                "no Kubernetes API server to talk to: {e}; run this in a Pod with a service account, or point KUBECONFIG at a cluster"
            )
        })?;
        work(client).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// What the commands share: the data directory and, made on first use, the runtime.
pub struct Context {
    home: PathBuf,
    /// How plugins are compiled: in a bounded child process, this program again.
    compiler: ChildCompiler,
}

impl Context {
    fn store(&self) -> anyhow::Result<PluginStore> {
        PluginStore::open(&self.home)
    }

    /// Fetches models and data named by URL, cached under the data directory.
    fn staging(&self) -> anyhow::Result<crate::learn::Staging> {
        crate::learn::Staging::new(&self.home.join("storage"))
    }

    fn runtime(&self) -> anyhow::Result<Runtime> {
        Runtime::new(RuntimeConfig {
            cache_dir: Some(self.home.join("cache")),
            compiler: Some(self.compiler.clone()),
            ..RuntimeConfig::default()
        })
    }
}

/// `KEY=VALUE` arguments as plugin parameters.
pub fn parse_params(params: &[String]) -> anyhow::Result<Vec<Param>> {
    params
        .iter()
        .map(|p| match p.split_once('=') {
            Some((key, value)) => Ok(Param {
                key: key.to_string(),
                value: value.to_string(),
            }),
            None => anyhow::bail!("--param {p:?}: write it as KEY=VALUE"),
        })
        .collect()
}

fn doctor(context: &Context, args: &Doctor) -> anyhow::Result<ExitCode> {
    println!("sedna {}", env!("CARGO_PKG_VERSION"));
    println!("data directory: {}", context.home.display());
    if args.install_onnxruntime {
        let library = crate::media::backend::install_onnxruntime(&context.home)
            .map_err(anyhow::Error::msg)?;
        println!("installed: {}", library.display());
    }
    let backend = crate::media::backend().map_err(anyhow::Error::msg)?;
    println!("{}", backend.summary());
    Ok(ExitCode::SUCCESS)
}

/// This program as the child that compiles plugins, within `timeout` seconds and
/// `memory` MiB.
fn compiler(timeout: f64, memory: u64) -> anyhow::Result<ChildCompiler> {
    let timeout = std::time::Duration::try_from_secs_f64(timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or_else(|| {
            anyhow::anyhow!("--compile-timeout {timeout:?}: give seconds above 0 and below 2^64")
        })?;
    let bytes = memory
        .checked_mul(1 << 20)
        .filter(|&bytes| bytes >= 64 << 20)
        .ok_or_else(|| anyhow::anyhow!("--compile-memory {memory}: give MiB from 64 to 2^44"))?;
    Ok(ChildCompiler {
        timeout,
        memory: bytes,
        ..ChildCompiler::this_program()
            .map_err(|e| anyhow::anyhow!("cannot find this program to compile plugins in: {e}"))?
    })
}

/// Runs the command line; errors are printed with their causes and exit with 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !cli.command.serves() {
        // A command whose output is read by another (`sedna status | head -1`) ends
        // quietly when the reader goes, as Unix tools do, instead of panicking on the
        // closed pipe. The services keep ignoring SIGPIPE: a client that goes is an
        // error on its connection, never the end of the process.
        // SAFETY: set before any other thread exists; SIG_DFL is a valid disposition.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SEDNA_LOG")
                .unwrap_or_else(|_| "sedna=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let compiler = match compiler(cli.compile_timeout, cli.compile_memory) {
        Ok(compiler) => compiler,
        Err(e) => {
            eprintln!("Error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let context = Context {
        home: cli.home.unwrap_or_else(crate::files::default_home),
        compiler,
    };
    crate::media::backend::use_home(&context.home);
    let result = match cli.command {
        Command::Plugin(command) => command.run(&context),
        Command::Predict(predict) => predict.run(&context),
        Command::Train(train) => train.run(&context),
        Command::Evaluate(evaluate) => evaluate.run(&context),
        Command::Run(run) => run.run(&context),
        Command::Status(status) => status.run(&context),
        Command::Label(command) => command.run(),
        Command::Doctor(args) => doctor(&context, &args),
        Command::CompileComponent => crate::plugin::run_compile_child().map(|()| ExitCode::SUCCESS),
        Command::Crds => {
            print!("{}", crate::spec::crds_yaml());
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "cluster")]
        Command::Controller(controller) => with_cluster(|client| async move {
            crate::cluster::controller::run(
                client,
                controller.namespace.as_deref(),
                controller.host_paths,
            )
            .await
        }),
        #[cfg(feature = "cluster")]
        Command::Agent(agent) => context.runtime().and_then(|runtime| {
            let store = context.store()?;
            with_cluster(|client| async move {
                crate::cluster::agent::Agent::new(
                    client,
                    &agent.node,
                    agent.namespace.as_deref(),
                    runtime,
                    store,
                )
                .run(std::time::Duration::from_secs(agent.interval.max(1)))
                .await
            })
        }),
        #[cfg(feature = "cluster")]
        Command::Worker(worker) => worker.run(&context),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
