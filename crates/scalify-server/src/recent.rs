//! The last warnings and errors this process logged, for the admin dashboard ("recent
//! errors"). A `tracing` layer copies each WARN/ERROR event into a bounded ring; the binary
//! installs it next to its log output (`scalify_server::recent::layer()`).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

const KEEP: usize = 50;

#[derive(Debug, Clone, Serialize)]
pub struct LoggedError {
    /// ms since the epoch
    pub ts: i64,
    pub level: &'static str,
    pub target: String,
    pub message: String,
}

static RING: Mutex<VecDeque<LoggedError>> = Mutex::new(VecDeque::new());

/// The most recent first.
pub fn recent() -> Vec<LoggedError> {
    RING.lock()
        .map(|r| r.iter().rev().cloned().collect())
        .unwrap_or_default()
}

pub struct RecentErrors;

pub fn layer() -> RecentErrors {
    RecentErrors
}

#[derive(Default)]
struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for RecentErrors {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > Level::WARN {
            return;
        }
        let mut text = Text::default();
        event.record(&mut text);
        let entry = LoggedError {
            ts: scalify_core::now_ms(),
            level: if level == Level::ERROR {
                "error"
            } else {
                "warn"
            },
            target: event.metadata().target().to_owned(),
            message: text.0.trim().chars().take(500).collect(),
        };
        if let Ok(mut ring) = RING.lock() {
            if ring.len() == KEEP {
                ring.pop_front();
            }
            ring.push_back(entry);
        }
    }
}
