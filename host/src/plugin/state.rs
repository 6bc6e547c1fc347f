//! What a plugin instance's store holds: its WASI context, resource table, memory budget,
//! sandbox and output tail; and the linker that gives every world its imports (the
//! interfaces' host sides are in `host/`).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{inference, log, training};
use super::sandbox::Sandbox;

/// How much of a plugin's stdout and stderr is kept to explain a trap.
const OUTPUT_TAIL: usize = 4096;

/// The data of one plugin instance's store (opaque outside the runtime).
pub struct HostState {
    wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) budget: Budget,
    pub(crate) sandbox: Sandbox,
    /// Bytes this instance holds on the host (tensors, graphs, sessions), capped like its
    /// memory.
    pub(crate) held_bytes: u64,
    pub(crate) plugin: Arc<str>,
    pub(crate) output: OutputTail,
    /// How many more lines the plugin may log now.
    pub(crate) log_budget: LogBudget,
    /// When the current call's deadline passes. The engine interrupts the plugin's code
    /// there; host work it asked for (a model run, a training pass) stops there too
    /// instead of at its end.
    pub(crate) deadline: Option<std::time::Instant>,
}

impl HostState {
    pub(crate) fn new(plugin: Arc<str>, sandbox: &Sandbox) -> anyhow::Result<Self> {
        let output = OutputTail::default();
        let mut wasi = WasiCtx::builder();
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stdout(output.clone())
            .stderr(output.clone());
        sandbox.grant_dirs(&mut wasi)?;
        Ok(HostState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            budget: Budget::new(sandbox.memory),
            sandbox: sandbox.clone(),
            held_bytes: 0,
            plugin,
            output,
            log_budget: Default::default(),
            deadline: None,
        })
    }

    /// The linker every world shares: WASI 0.2 (sandboxed by each store's context), the
    /// `log` interface and, for estimators, `inference` and `training`.
    pub(crate) fn linker(engine: &Engine) -> anyhow::Result<Linker<HostState>> {
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        log::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )?;
        inference::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )?;
        training::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )?;
        Ok(linker)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps an instance's linear memory and remembers whether the cap was hit, so that the
/// trap that follows a refused growth is reported as out-of-memory.
pub(crate) struct Budget {
    pub(crate) memory_cap: u64,
    pub(crate) memory_exceeded: bool,
}

/// Table elements one instance may have (function tables of large runtimes included).
const MAX_TABLE_ELEMENTS: usize = 200_000;

impl Budget {
    fn new(memory_cap: u64) -> Self {
        Budget {
            memory_cap,
            memory_exceeded: false,
        }
    }
}

impl ResourceLimiter for Budget {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.memory_cap {
            self.memory_exceeded = true;
            return Ok(false);
        }
        Ok(maximum.is_none_or(|max| desired <= max))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS && maximum.is_none_or(|max| desired <= max))
    }
}

/// Lines an instance may log at once...
pub(crate) const LOG_BURST: f64 = 200.0;
/// ...and a second, on average, after that.
pub(crate) const LOG_PER_SECOND: f64 = 50.0;

/// A plugin instance's allowance of log lines (a token bucket). Lines beyond it are not
/// logged but counted, and the count is logged before the next line that goes.
#[derive(Debug)]
pub(crate) struct LogBudget {
    tokens: f64,
    refilled: Instant,
    suppressed: u64,
}

impl Default for LogBudget {
    fn default() -> Self {
        LogBudget {
            tokens: LOG_BURST,
            refilled: Instant::now(),
            suppressed: 0,
        }
    }
}

impl LogBudget {
    /// Whether a line may be logged at `now`: `Some(n)` with the lines suppressed since
    /// the last one that went, `None` to drop this one.
    pub(crate) fn admit(&mut self, now: Instant) -> Option<u64> {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * LOG_PER_SECOND).min(LOG_BURST);
        self.refilled = now;
        if self.tokens < 1.0 {
            self.suppressed += 1;
            return None;
        }
        self.tokens -= 1.0;
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// The last few KiB a plugin wrote to stdout or stderr: a panic message explains a trap.
#[derive(Clone, Default)]
pub(crate) struct OutputTail(Arc<Mutex<VecDeque<u8>>>);

impl OutputTail {
    fn push(&self, bytes: &[u8]) {
        let mut tail = self.0.lock().unwrap();
        tail.extend(bytes);
        let excess = tail.len().saturating_sub(OUTPUT_TAIL);
        tail.drain(..excess);
    }

    /// Takes what was written since the last call, as text.
    pub(crate) fn take(&self) -> String {
        let bytes: Vec<u8> = self.0.lock().unwrap().drain(..).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl IsTerminal for OutputTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for OutputTail {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for OutputTail {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(OUTPUT_TAIL)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for OutputTail {
    async fn ready(&mut self) {}
}

impl AsyncWrite for OutputTail {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
