//! Compiling a component in a child process, bounded. Cranelift's time and memory grow
//! faster than a component's size (eight 3.5 MB functions compiled for 290 s at 3.7 GiB),
//! and within the size screen a component can still hold many large functions. So the
//! `sedna` program compiles every component (an upload, a job's plugin) in a child, this
//! program again (`sedna compile-component`), which reads the component on stdin and
//! writes wasmtime's precompiled form on stdout, under a memory limit; the child is
//! killed at its deadline or as soon as whoever asked stops waiting (an upload's client
//! that disconnects).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The subcommand the child runs (hidden from `sedna --help`).
pub const SUBCOMMAND: &str = "compile-component";

/// How often a waiting compile looks at its child, its deadline and its cancel flag.
const POLL: Duration = Duration::from_millis(20);

/// Where and how bounded components are compiled.
#[derive(Clone, Debug)]
pub struct ChildCompiler {
    /// The `sedna` executable that runs [`SUBCOMMAND`].
    pub program: PathBuf,
    /// Wall-clock time one compile may take.
    pub timeout: Duration,
    /// Bytes of writable memory the child may map (`RLIMIT_DATA`).
    pub memory: u64,
}

impl ChildCompiler {
    /// Default bounds: two minutes, and 2 GiB. The largest components this project
    /// builds, componentize-py's (18 MB) and componentize-js's (12 MB), each compile in
    /// about 10 s within 400 MiB on 2 cores of this machine; an edge board several times
    /// slower still has room.
    pub const TIMEOUT: Duration = Duration::from_secs(120);
    pub const MEMORY: u64 = 2 << 30;

    /// This executable (which must be `sedna`), with the default bounds.
    pub fn this_program() -> std::io::Result<Self> {
        Ok(ChildCompiler {
            program: std::env::current_exe()?,
            timeout: Self::TIMEOUT,
            memory: Self::MEMORY,
        })
    }

    /// The precompiled form of `wasm` for this program's engine, or why there is none.
    pub fn compile(&self, wasm: &[u8], cancel: &Cancel) -> Result<Vec<u8>, CompileError> {
        let mut command = Command::new(&self.program);
        command.arg(SUBCOMMAND);
        // glibc reserves an arena per thread; two are plenty for one compile.
        command
            .env("MALLOC_ARENA_MAX", "2")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        limit_memory(&mut command, self.memory);
        let mut child = command.spawn().map_err(|e| {
            CompileError::Failed(format!(
                "cannot start the compiler {}: {e}",
                self.program.display()
            ))
        })?;
        // The pipes are fed and drained on threads of their own, so that neither side
        // blocks, while this one watches the clock and the cancel flag.
        let (stdin, mut stdout, mut stderr) = (
            child.stdin.take().expect("piped"),
            child.stdout.take().expect("piped"),
            child.stderr.take().expect("piped"),
        );
        let (status, output, errors) = std::thread::scope(|scope| {
            // Moved in, so that the pipe closes when written; a child that dies early
            // closes it first, and its exit says why.
            scope.spawn(move || {
                let mut stdin = stdin;
                stdin.write_all(wasm)
            });
            let output = scope.spawn(|| read_all(&mut stdout));
            let errors = scope.spawn(|| read_all(&mut stderr));
            let status = self.wait(&mut child, cancel);
            let read =
                |pipe: std::thread::ScopedJoinHandle<Vec<u8>>| pipe.join().unwrap_or_default();
            (status, read(output), read(errors))
        });
        let status = status?;
        if status.success() {
            return Ok(output);
        }
        let errors = String::from_utf8_lossy(&errors);
        if out_of_memory(&errors, &status) {
            return Err(CompileError::OutOfMemory(self.memory));
        }
        // The child's own `error: ` prefix would repeat what the caller says.
        let reason = errors.trim();
        let reason = reason.strip_prefix("error: ").unwrap_or(reason);
        Err(CompileError::Failed(match reason {
            "" => format!("the compiler ended with {status}"),
            reason => reason.to_string(),
        }))
    }

    /// Waits for `child` to end; kills it at the deadline or when `cancel` is set.
    fn wait(&self, child: &mut Child, cancel: &Cancel) -> Result<ExitStatus, CompileError> {
        let started = Instant::now();
        loop {
            let ended = child
                .try_wait()
                .map_err(|e| CompileError::Failed(format!("cannot wait for the compiler: {e}")))?;
            if let Some(status) = ended {
                return Ok(status);
            }
            let stop = if cancel.is_cancelled() {
                CompileError::Cancelled
            } else if started.elapsed() > self.timeout {
                CompileError::TimedOut(self.timeout)
            } else {
                std::thread::sleep(POLL);
                continue;
            };
            let _ = child.kill();
            let _ = child.wait();
            return Err(stop);
        }
    }
}

/// All a pipe gives until it closes (what was read when it breaks).
fn read_all(pipe: &mut impl Read) -> Vec<u8> {
    let mut bytes = Vec::new();
    let _ = pipe.read_to_end(&mut bytes);
    bytes
}

/// Whether the child ran out of the memory it was given: Rust aborts on a failed
/// allocation ("memory allocation of N bytes failed"), and an mmap refused shows as
/// an error naming it.
fn out_of_memory(errors: &str, status: &ExitStatus) -> bool {
    #[cfg(unix)]
    let aborted = std::os::unix::process::ExitStatusExt::signal(status) == Some(libc::SIGABRT);
    #[cfg(not(unix))]
    let aborted = !status.success();
    (aborted && errors.contains("memory allocation"))
        || errors.contains("Cannot allocate memory")
        || errors.contains("out of memory")
}

/// Caps the child's writable mappings: the heap and anonymous memory count, address
/// space merely reserved (guard regions, thread stacks not yet touched) does not.
#[cfg(unix)]
fn limit_memory(command: &mut Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and makes only system
    // calls (`getrlimit`, `setrlimit`, `prctl`), which are async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_DATA, &mut limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Never above a hard limit the host was started under.
            let bytes = (bytes as libc::rlim_t).min(limit.rlim_max);
            limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_DATA, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // A compile outlives no host that asked for it, killed or not.
            #[cfg(target_os = "linux")]
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

#[cfg(not(unix))]
fn limit_memory(_command: &mut Command, _bytes: u64) {}

/// Why a bounded compile produced nothing.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(
        "compiling it took over {} s, the limit of this host (--compile-timeout): make the component smaller",
        .0.as_secs_f64()
    )]
    TimedOut(Duration),
    #[error(
        "compiling it needed over {} MiB, the limit of this host (--compile-memory): make the component smaller",
        .0 >> 20
    )]
    OutOfMemory(u64),
    #[error("the compile was cancelled: its caller stopped waiting")]
    Cancelled,
    #[error("{0}")]
    Failed(String),
}

/// Set when whoever asked for a compile no longer waits for it. Clones share the flag.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// A guard that cancels when dropped: held by a request's future, it cancels the
    /// compile when the server drops the future (the client went away).
    pub fn on_drop(&self) -> CancelOnDrop {
        CancelOnDrop(self.clone())
    }
}

/// Cancels its [`Cancel`] when dropped.
pub struct CancelOnDrop(Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}
