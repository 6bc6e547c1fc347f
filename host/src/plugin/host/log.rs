//! The host side of the `log` interface: a plugin's lines, cut to a bounded length and
//! tagged with its name.

use crate::plugin::bindings::log::{self, Level};
use crate::plugin::state::HostState;

/// Longest log message a plugin can emit in one call; the rest is cut.
const MAX_LOG_MESSAGE: usize = 4096;

impl log::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        let mut end = message.len().min(MAX_LOG_MESSAGE);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let (plugin, message) = (&*self.plugin, &message[..end]);
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}
