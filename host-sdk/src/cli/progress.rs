//! An indicatif progress display fed by executor events.

use std::sync::atomic::{AtomicUsize, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use odelt_host::{Event, EventKind, EventSink};

/// Shows `[done/total] node (Class) [bar] step/steps`.
pub struct ProgressDisplay {
    bar: ProgressBar,
    total: AtomicUsize,
    done: AtomicUsize,
}

impl ProgressDisplay {
    /// A display on stderr (hidden when `quiet` or when stderr is not a terminal).
    pub fn new(quiet: bool) -> Self {
        let bar = if quiet {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
        } else {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        };
        let style = ProgressStyle::with_template(
            "{spinner} {prefix} {msg} [{bar:30}] {pos}/{len} ({elapsed})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        ProgressDisplay {
            bar,
            total: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
        }
    }

    fn prefix(&self) -> String {
        format!(
            "[{}/{}]",
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed)
        )
    }

    /// Clears the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl EventSink for ProgressDisplay {
    fn emit(&self, ev: &Event) {
        match &ev.kind {
            EventKind::ExecutionCached { nodes, to_execute } => {
                self.total.store(*to_execute, Ordering::Relaxed);
                if !nodes.is_empty() {
                    self.bar.println(format!("cached: {}", nodes.join(", ")));
                }
                self.bar.set_prefix(self.prefix());
            }
            EventKind::Executing {
                node_id,
                class_type,
            } => {
                self.bar.set_message(format!("{node_id} ({class_type})"));
                self.bar.set_length(1);
                self.bar.set_position(0);
                self.bar.set_prefix(self.prefix());
            }
            EventKind::Progress { value, max, .. } => {
                self.bar.set_length(*max);
                self.bar.set_position(*value);
            }
            EventKind::ProgressText { node_id, text } => {
                self.bar.println(format!("{node_id}: {text}"));
            }
            EventKind::NodeDone { .. } => {
                self.done.fetch_add(1, Ordering::Relaxed);
                self.bar.set_prefix(self.prefix());
                self.bar.tick();
            }
            _ => {}
        }
    }
}
