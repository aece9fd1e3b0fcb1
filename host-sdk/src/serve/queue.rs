//! The prompt queue (bounded, ordered by ComfyUI's `number`, then arrival), the running
//! prompt with its cancel token, and the history (capped, oldest dropped first).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex};

use serde_json::{json, Map, Value as Json};

use crate::events::CancelToken;
use crate::executor::RunOptions;
use crate::prompt::Prompt;
use crate::sync::lock;
use crate::validate::Plan;

/// A validated prompt waiting to run.
pub(crate) struct QueueItem {
    pub number: f64,
    pub seq: u64,
    pub prompt_id: String,
    pub prompt: Prompt,
    pub plan: Plan,
    pub extra_data: Json,
    pub outputs: Vec<String>,
    pub client_id: Option<String>,
    pub opts: RunOptions,
    /// Size of the request that queued it (for the queue's byte budget).
    pub bytes: usize,
}

/// ComfyUI writes integral numbers without a fraction.
pub(crate) fn number_json(n: f64) -> Json {
    if n.fract() == 0.0 && n.abs() < 9e15 {
        json!(n as i64)
    } else {
        json!(n)
    }
}

impl QueueItem {
    /// ComfyUI's queue tuple `[number, prompt_id, prompt, extra_data, outputs_to_execute]`.
    pub fn tuple(&self) -> Json {
        json!([
            number_json(self.number),
            self.prompt_id,
            Json::Object(self.prompt.json().clone()),
            self.extra_data,
            self.outputs
        ])
    }
}

/// Why a prompt was not queued.
#[derive(Debug, PartialEq)]
pub(crate) enum SubmitError {
    /// The id is queued, running or in history.
    Duplicate,
    /// The queue holds `limit` prompts already.
    Full { limit: usize },
    /// The waiting prompts' requests add up to more than `limit` bytes.
    FullBytes { limit: usize },
    /// The server is stopping.
    Stopping,
}

/// History entries by prompt id, in insertion order, capped.
#[derive(Debug, Default)]
pub struct History {
    order: VecDeque<String>,
    entries: HashMap<String, (Json, usize)>,
    cap: usize,
    max_bytes: usize,
    bytes: usize,
}

impl History {
    /// An empty history keeping at most `cap` entries.
    pub fn new(cap: usize) -> Self {
        History {
            cap: cap.max(1),
            max_bytes: usize::MAX,
            ..Default::default()
        }
    }
    /// Also drops the oldest entries while their JSON adds up to more than `max_bytes`
    /// (the newest entry is always kept).
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes.max(1);
        self
    }
    /// Adds (or replaces) an entry, dropping the oldest beyond the caps.
    pub fn insert(&mut self, id: String, entry: Json) {
        let size = serde_json::to_vec(&entry).map_or(0, |v| v.len());
        self.bytes += size;
        match self.entries.insert(id.clone(), (entry, size)) {
            Some((_, old)) => self.bytes -= old,
            None => self.order.push_back(id),
        }
        while self.order.len() > self.cap || (self.bytes > self.max_bytes && self.order.len() > 1) {
            if let Some(old) = self.order.pop_front() {
                if let Some((_, n)) = self.entries.remove(&old) {
                    self.bytes -= n;
                }
            }
        }
    }
    /// Bytes of JSON held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    /// One entry.
    pub fn get(&self, id: &str) -> Option<&Json> {
        self.entries.get(id).map(|(e, _)| e)
    }
    /// Whether `id` is present.
    pub fn contains(&self, id: &str) -> bool {
        self.entries.contains_key(id)
    }
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.order.len()
    }
    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
    /// ComfyUI's `GET /history?max_items=N&offset=K`: entries from `offset` (oldest first);
    /// a negative offset with `max_items` means the last `max_items` entries.
    pub fn list(&self, max_items: Option<usize>, offset: i64) -> Map<String, Json> {
        let len = self.order.len() as i64;
        let start = match (offset < 0, max_items) {
            (true, Some(m)) => (len - m as i64).max(0),
            (true, None) => 0,
            (false, _) => offset.min(len),
        } as usize;
        let mut out = Map::new();
        for id in self.order.iter().skip(start) {
            if max_items.is_some_and(|m| out.len() >= m) {
                break;
            }
            if let Some((e, _)) = self.entries.get(id) {
                out.insert(id.clone(), e.clone());
            }
        }
        out
    }
    /// Removes the given ids; returns how many were present.
    pub fn delete(&mut self, ids: &[String]) -> usize {
        let set: HashSet<&String> = ids.iter().collect();
        let before = self.order.len();
        self.order.retain(|id| !set.contains(id));
        for id in ids {
            if let Some((_, n)) = self.entries.remove(id) {
                self.bytes -= n;
            }
        }
        before - self.order.len()
    }
    /// Removes everything.
    pub fn clear(&mut self) {
        self.order.clear();
        self.entries.clear();
        self.bytes = 0;
    }
}

pub(crate) struct Running {
    pub item: Arc<QueueItem>,
    pub cancel: CancelToken,
}

struct State {
    pending: Vec<Arc<QueueItem>>,
    pending_bytes: usize,
    running: Option<Running>,
    history: History,
    ids: HashSet<String>,
    counter: u64,
    seq: u64,
    free: Option<(bool, bool)>,
    stop: bool,
}

/// What the worker should do next.
pub(crate) enum Next {
    Run(Arc<QueueItem>, CancelToken),
    Free {
        unload_models: bool,
        free_memory: bool,
    },
    Stop,
}

pub(crate) struct Queue {
    state: Mutex<State>,
    cond: Condvar,
    max_pending: usize,
    max_pending_bytes: usize,
}

impl Queue {
    pub fn new(max_pending: usize, max_history: usize) -> Self {
        Queue {
            state: Mutex::new(State {
                pending: Vec::new(),
                pending_bytes: 0,
                running: None,
                history: History::new(max_history),
                ids: HashSet::new(),
                counter: 0,
                seq: 0,
                free: None,
                stop: false,
            }),
            cond: Condvar::new(),
            max_pending: max_pending.max(1),
            max_pending_bytes: usize::MAX,
        }
    }

    /// Byte budgets: waiting requests (503 beyond) and history JSON (oldest dropped).
    pub fn with_byte_limits(mut self, pending_bytes: usize, history_bytes: usize) -> Self {
        self.max_pending_bytes = pending_bytes.max(1);
        let s = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        s.history = std::mem::take(&mut s.history).with_max_bytes(history_bytes);
        self
    }

    /// ComfyUI's priority: an explicit `number`, else the counter (negated with `front`).
    /// Checks the id, the capacity, then queues. Returns the number used.
    pub fn submit(
        &self,
        number: Option<f64>,
        front: bool,
        bytes: usize,
        build: impl FnOnce(f64, u64) -> QueueItem,
        prompt_id: &str,
    ) -> Result<f64, SubmitError> {
        let mut s = lock(&self.state);
        if s.stop {
            return Err(SubmitError::Stopping);
        }
        if s.ids.contains(prompt_id) || s.history.contains(prompt_id) {
            return Err(SubmitError::Duplicate);
        }
        if s.pending.len() >= self.max_pending {
            return Err(SubmitError::Full {
                limit: self.max_pending,
            });
        }
        if !s.pending.is_empty() && s.pending_bytes.saturating_add(bytes) > self.max_pending_bytes {
            return Err(SubmitError::FullBytes {
                limit: self.max_pending_bytes,
            });
        }
        let number = match number {
            Some(n) => n,
            None => {
                let n = s.counter as f64;
                s.counter += 1;
                if front {
                    -n
                } else {
                    n
                }
            }
        };
        s.seq += 1;
        let item = Arc::new(build(number, s.seq));
        let key = |i: &QueueItem| (i.number, i.seq);
        let pos = s
            .pending
            .partition_point(|p| key(p).partial_cmp(&key(&item)) == Some(std::cmp::Ordering::Less));
        s.ids.insert(item.prompt_id.clone());
        s.pending_bytes += item.bytes;
        s.pending.insert(pos, item);
        drop(s);
        self.cond.notify_all();
        Ok(number)
    }

    /// Blocks until there is work: pending `/free` requests are handled between prompts.
    pub fn next(&self) -> Next {
        let mut s = lock(&self.state);
        loop {
            if s.stop {
                return Next::Stop;
            }
            if let Some((unload_models, free_memory)) = s.free.take() {
                return Next::Free {
                    unload_models,
                    free_memory,
                };
            }
            if !s.pending.is_empty() {
                let item = s.pending.remove(0);
                s.pending_bytes -= item.bytes;
                let cancel = CancelToken::new();
                s.running = Some(Running {
                    item: item.clone(),
                    cancel: cancel.clone(),
                });
                return Next::Run(item, cancel);
            }
            s = self.cond.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Records the finished prompt in history and clears `running`.
    pub fn finish(&self, prompt_id: &str, entry: Json) {
        let mut s = lock(&self.state);
        s.running = None;
        s.ids.remove(prompt_id);
        s.history.insert(prompt_id.to_string(), entry);
    }

    /// Pending + running.
    pub fn remaining(&self) -> usize {
        let s = lock(&self.state);
        s.pending.len() + usize::from(s.running.is_some())
    }

    /// `(queue_running, queue_pending)` as ComfyUI tuples.
    pub fn snapshot(&self) -> (Vec<Json>, Vec<Json>) {
        let s = lock(&self.state);
        let running = s.running.iter().map(|r| r.item.tuple()).collect();
        let pending = s.pending.iter().map(|p| p.tuple()).collect();
        (running, pending)
    }

    /// Removes every pending prompt; returns how many.
    pub fn clear_pending(&self) -> usize {
        let mut s = lock(&self.state);
        let n = s.pending.len();
        s.pending_bytes = 0;
        let ids: Vec<String> = s.pending.drain(..).map(|p| p.prompt_id.clone()).collect();
        for id in ids {
            s.ids.remove(&id);
        }
        n
    }

    /// Removes the given pending prompts; returns how many were pending.
    pub fn delete_pending(&self, ids: &[String]) -> usize {
        let mut s = lock(&self.state);
        let before = s.pending.len();
        s.pending.retain(|p| !ids.contains(&p.prompt_id));
        s.pending_bytes = s.pending.iter().map(|p| p.bytes).sum();
        let removed = before - s.pending.len();
        for id in ids {
            let running = s.running.as_ref().is_some_and(|r| &r.item.prompt_id == id);
            if !running {
                s.ids.remove(id);
            }
        }
        removed
    }

    /// Cancels the running prompt (only if it is `prompt_id`, when given). Returns whether
    /// a prompt was told to stop.
    pub fn interrupt(&self, prompt_id: Option<&str>) -> bool {
        let s = lock(&self.state);
        match &s.running {
            Some(r) if prompt_id.is_none_or(|id| id == r.item.prompt_id) => {
                r.cancel.cancel();
                true
            }
            _ => false,
        }
    }

    /// Asks the worker to free memory before its next prompt.
    pub fn request_free(&self, unload_models: bool, free_memory: bool) {
        let mut s = lock(&self.state);
        let (u, f) = s.free.unwrap_or((false, false));
        s.free = Some((u || unload_models, f || free_memory));
        drop(s);
        self.cond.notify_all();
    }

    /// Runs `f` on the history.
    pub fn with_history<R>(&self, f: impl FnOnce(&mut History) -> R) -> R {
        f(&mut lock(&self.state).history)
    }

    /// Stops the worker (cancelling the running prompt).
    pub fn stop(&self) {
        let mut s = lock(&self.state);
        s.stop = true;
        if let Some(r) = &s.running {
            r.cancel.cancel();
        }
        drop(s);
        self.cond.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, number: f64, seq: u64) -> QueueItem {
        QueueItem {
            number,
            seq,
            prompt_id: id.into(),
            prompt: Prompt::from_json(json!({})).unwrap(),
            plan: Plan {
                nodes: vec![],
                outputs: vec![],
                node_errors: Map::new(),
            },
            extra_data: json!({}),
            outputs: vec![],
            client_id: None,
            opts: RunOptions::default(),
            bytes: 100,
        }
    }

    fn submit(q: &Queue, id: &str, number: Option<f64>, front: bool) -> Result<f64, SubmitError> {
        q.submit(number, front, 100, |n, s| item(id, n, s), id)
    }

    #[test]
    fn byte_budgets_bound_queue_and_history() {
        let q = Queue::new(100, 100).with_byte_limits(250, 1 << 20);
        submit(&q, "a", None, false).unwrap();
        submit(&q, "b", None, false).unwrap();
        assert_eq!(
            submit(&q, "c", None, false),
            Err(SubmitError::FullBytes { limit: 250 })
        );
        let Next::Run(..) = q.next() else {
            panic!("expected a run")
        };
        submit(&q, "c", None, false).unwrap();
        let mut h = History::new(100).with_max_bytes(30);
        h.insert("x".into(), json!("0123456789"));
        h.insert("y".into(), json!("0123456789"));
        assert_eq!(h.len(), 2);
        h.insert("z".into(), json!("0123456789"));
        assert_eq!(h.len(), 2);
        assert!(h.get("x").is_none());
        h.insert("big".into(), json!("x".repeat(100)));
        assert_eq!(h.len(), 1, "the newest entry stays even when over budget");
        assert_eq!(h.bytes(), 102);
        h.delete(&["big".into()]);
        assert_eq!(h.bytes(), 0);
    }

    fn pending_ids(q: &Queue) -> Vec<String> {
        q.snapshot()
            .1
            .iter()
            .map(|t| t[1].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn orders_by_number_then_arrival_and_front_jumps() {
        let q = Queue::new(10, 10);
        assert_eq!(submit(&q, "a", None, false), Ok(0.0));
        assert_eq!(submit(&q, "b", None, false), Ok(1.0));
        assert_eq!(submit(&q, "c", None, true), Ok(-2.0));
        assert_eq!(submit(&q, "d", Some(0.5), false), Ok(0.5));
        assert_eq!(submit(&q, "e", Some(0.5), false), Ok(0.5));
        assert_eq!(pending_ids(&q), ["c", "a", "d", "e", "b"]);
        assert_eq!(q.remaining(), 5);
        match q.next() {
            Next::Run(i, _) => assert_eq!(i.prompt_id, "c"),
            _ => panic!("expected a run"),
        }
        assert_eq!(q.remaining(), 5);
        assert_eq!(q.snapshot().0.len(), 1);
    }

    #[test]
    fn refuses_duplicates_and_overflow() {
        let q = Queue::new(2, 10);
        submit(&q, "a", None, false).unwrap();
        assert_eq!(submit(&q, "a", None, false), Err(SubmitError::Duplicate));
        submit(&q, "b", None, false).unwrap();
        assert_eq!(
            submit(&q, "c", None, false),
            Err(SubmitError::Full { limit: 2 })
        );
        let Next::Run(i, _) = q.next() else {
            panic!("expected a run")
        };
        q.finish(&i.prompt_id, json!({"x": 1}));
        assert_eq!(submit(&q, "a", None, false), Err(SubmitError::Duplicate));
        assert_eq!(q.delete_pending(&["b".into()]), 1);
        submit(&q, "b", None, false).unwrap();
        assert_eq!(q.clear_pending(), 1);
        assert_eq!(q.remaining(), 0);
    }

    #[test]
    fn interrupt_targets_the_running_prompt_only() {
        let q = Queue::new(4, 4);
        submit(&q, "a", None, false).unwrap();
        assert!(!q.interrupt(None));
        let Next::Run(_, cancel) = q.next() else {
            panic!("expected a run")
        };
        assert!(!q.interrupt(Some("other")));
        assert!(!cancel.is_cancelled());
        assert!(q.interrupt(Some("a")));
        assert!(cancel.is_cancelled());
    }

    #[test]
    fn free_requests_come_before_the_next_prompt() {
        let q = Queue::new(4, 4);
        submit(&q, "a", None, false).unwrap();
        q.request_free(true, false);
        q.request_free(false, true);
        assert!(matches!(
            q.next(),
            Next::Free {
                unload_models: true,
                free_memory: true
            }
        ));
        assert!(matches!(q.next(), Next::Run(..)));
        q.stop();
        assert!(matches!(q.next(), Next::Stop));
    }

    #[test]
    fn history_caps_lists_and_deletes() {
        let mut h = History::new(3);
        for k in 0..5 {
            h.insert(format!("p{k}"), json!(k));
        }
        assert_eq!(h.len(), 3);
        assert!(h.get("p1").is_none());
        let all: Vec<String> = h.list(None, -1).keys().cloned().collect();
        assert_eq!(all, ["p2", "p3", "p4"]);
        let last: Vec<String> = h.list(Some(2), -1).keys().cloned().collect();
        assert_eq!(last, ["p3", "p4"]);
        let first: Vec<String> = h.list(Some(1), 0).keys().cloned().collect();
        assert_eq!(first, ["p2"]);
        assert_eq!(h.delete(&["p3".into(), "nope".into()]), 1);
        assert_eq!(h.len(), 2);
        h.clear();
        assert!(h.is_empty());
    }
}
