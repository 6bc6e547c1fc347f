//! The host side of the `log` interface: a plugin's lines, cut to a bounded length,
//! escaped so that none can pass for a line of the host's, limited in rate, and tagged
//! with its name.

use std::time::Instant;

use crate::plugin::bindings::log::{self, Level};
use crate::plugin::state::{HostState, LOG_PER_SECOND};

/// Longest log message a plugin can emit in one call; the rest is cut.
const MAX_LOG_MESSAGE: usize = 4096;
/// `message` with control characters (line breaks, escape sequences) written as
/// escapes (`\n`, `\u{1b}`), so that one plugin line stays one log line.
fn escape(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for c in message.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl log::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        let plugin = &*self.plugin;
        let Some(suppressed) = self.log_budget.admit(Instant::now()) else {
            return;
        };
        if suppressed > 0 {
            tracing::warn!(
                plugin,
                "{suppressed} log lines suppressed (more than {LOG_PER_SECOND} a second)"
            );
        }
        let mut end = message.len().min(MAX_LOG_MESSAGE);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let message = escape(&message[..end]);
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::plugin::state::{LOG_BURST, LogBudget};

    #[test]
    fn a_burst_goes_then_the_rate_and_the_suppressed_are_counted() {
        let mut budget = LogBudget::default();
        let start = Instant::now();
        let went = (0..1_000).filter(|_| budget.admit(start).is_some()).count();
        assert_eq!(went, LOG_BURST as usize);
        // A second later, 50 more; the first of them says how many were dropped.
        let later = start + Duration::from_secs(1);
        assert_eq!(budget.admit(later), Some(1_000 - LOG_BURST as u64));
        let went = 1 + (0..1_000).filter(|_| budget.admit(later).is_some()).count();
        assert_eq!(went, LOG_PER_SECOND as usize);
    }

    #[test]
    fn a_line_break_cannot_forge_a_host_line() {
        assert_eq!(
            escape("done\nround 99: deployed\r\u{1b}[2J"),
            "done\\nround 99: deployed\\r\\u{1b}[2J"
        );
        assert_eq!(escape("plain ünïcode"), "plain ünïcode");
    }
}
