//! Running host work off the Python thread: the work (a workflow run, a batch, one node call) runs on a scoped
//! thread while the calling thread, with the GIL released, waits for it. Every 50 ms, and after every progress
//! callback, the caller checks Python's signals; progress events are delivered to the Python callback on the
//! caller's thread, and the node waits for the callback to return, so a callback (or a Ctrl-C) that stops the run
//! does so before the node's next evaluation.

use std::time::Duration;

use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};
use odelt_host::{CancelToken, Event, EventKind, EventSink, Preview};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use odelt_host::odelt_contract::PreviewFormat;

enum Msg {
    Event(Event, Sender<()>),
    Done,
}

/// Forwards progress events to the waiting caller and blocks until it has handled them.
struct ChannelSink {
    tx: Sender<Msg>,
    forward: bool,
}

impl EventSink for ChannelSink {
    fn emit(&self, event: &Event) {
        if !self.forward
            || !matches!(
                event.kind,
                EventKind::Progress { .. } | EventKind::ProgressText { .. }
            )
        {
            return;
        }
        let (ack_tx, ack_rx) = bounded(1);
        if self.tx.send(Msg::Event(event.clone(), ack_tx)).is_ok() {
            // Returns when the callback ran (or the caller went away).
            let _ = ack_rx.recv();
        }
    }
}

fn preview_to_py<'py>(py: Python<'py>, p: &Preview) -> PyResult<Bound<'py, PyAny>> {
    let format = match p.format {
        PreviewFormat::Rgb8 => "rgb8",
        PreviewFormat::Png => "png",
        PreviewFormat::Jpeg => "jpeg",
    };
    Ok((format, p.width, p.height, PyBytes::new(py, &p.data))
        .into_pyobject(py)?
        .into_any())
}

/// The dict a progress callback receives.
fn event_to_py<'py>(py: Python<'py>, ev: &Event) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("prompt_id", &*ev.prompt_id)?;
    match &ev.kind {
        EventKind::Progress {
            node_id,
            value,
            max,
            preview,
        } => {
            d.set_item("type", "progress")?;
            d.set_item("node_id", node_id)?;
            d.set_item("value", value)?;
            d.set_item("max", max)?;
            match preview {
                Some(p) => d.set_item("preview", preview_to_py(py, p)?)?,
                None => d.set_item("preview", py.None())?,
            }
        }
        EventKind::ProgressText { node_id, text } => {
            d.set_item("type", "text")?;
            d.set_item("node_id", node_id)?;
            d.set_item("text", text)?;
        }
        _ => d.set_item("type", "other")?,
    }
    Ok(d)
}

fn wait(py: Python<'_>, rx: &Receiver<Msg>) -> Result<Msg, RecvTimeoutError> {
    py.detach(|| rx.recv_timeout(Duration::from_millis(50)))
}

/// Runs `work` on another thread with the GIL released; see the module docs. A Python error raised by the
/// callback or by a signal handler (KeyboardInterrupt) cancels `cancel` and is returned once the work has
/// stopped, in place of its result.
pub fn drive<T, F>(
    py: Python<'_>,
    cancel: &CancelToken,
    on_progress: Option<&Bound<'_, PyAny>>,
    work: F,
) -> PyResult<T>
where
    T: Send,
    F: FnOnce(&dyn EventSink) -> T + Send,
{
    let (tx, rx) = unbounded::<Msg>();
    let sink = ChannelSink {
        tx: tx.clone(),
        forward: on_progress.is_some(),
    };
    let (result, pending) = std::thread::scope(|s| {
        let handle = s.spawn(move || {
            let r = work(&sink);
            let _ = tx.send(Msg::Done);
            r
        });
        let mut pending: Option<PyErr> = None;
        let fail = |e: PyErr, pending: &mut Option<PyErr>| {
            if pending.is_none() {
                *pending = Some(e);
            }
            cancel.cancel();
        };
        loop {
            match wait(py, &rx) {
                Ok(Msg::Event(ev, ack)) => {
                    if pending.is_none() {
                        if let Some(cb) = on_progress {
                            let called = event_to_py(py, &ev).and_then(|d| cb.call1((d,)));
                            if let Err(e) = called {
                                fail(e, &mut pending);
                            }
                        }
                    }
                    if pending.is_none() {
                        if let Err(e) = py.check_signals() {
                            fail(e, &mut pending);
                        }
                    }
                    let _ = ack.send(());
                }
                Ok(Msg::Done) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    if pending.is_none() {
                        if let Err(e) = py.check_signals() {
                            fail(e, &mut pending);
                        }
                    }
                }
            }
        }
        (py.detach(|| handle.join()), pending)
    });
    if let Some(e) = pending {
        return Err(e);
    }
    result.map_err(|_| PyRuntimeError::new_err("odelt: the host thread panicked"))
}
