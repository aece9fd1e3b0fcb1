//! The prompt queue (bounded, ordered by ComfyUI's `number`, then arrival), the running
//! prompt with its cancel token, and the history (capped, oldest dropped first).
//!
//! With a [`Store`] every change is also written to disk ([`super::store`]): a prompt is queued
//! in memory only once its record is committed, so `POST /prompt` answers only for prompts that
//! survive a crash; the worker marks a prompt as started as it runs it and replaces its
//! record by the history entry in one commit when it ends. [`Queue::restore`] puts back what a
//! previous server left: a prompt that was running goes first (`rank` 0), marked as restarted.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex};

use serde_json::{json, Map, Value as Json};

use std::time::{Duration, Instant};

use super::store::{Op, PendingRecord, Store, StoreError, Ticket};
use crate::events::CancelToken;
use crate::executor::RunOptions;
use crate::prompt::Prompt;
use crate::sync::lock;
use crate::validate::Plan;

/// A validated prompt waiting to run.
pub(crate) struct QueueItem {
    /// 0 for a prompt that was running when the previous server stopped (it runs first),
    /// 1 for every other.
    pub rank: u8,
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
    /// How many times a server started it before (more than 0: it is a restart).
    pub starts: u32,
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

    /// The stored form, with `starts` starts.
    pub fn record(&self, starts: u32) -> PendingRecord {
        PendingRecord {
            prompt_id: self.prompt_id.clone(),
            number: self.number,
            seq: self.seq,
            prompt: Json::Object(self.prompt.json().clone()),
            extra_data: self.extra_data.clone(),
            outputs: self.outputs.clone(),
            client_id: self.client_id.clone(),
            extra_pnginfo: self.opts.extra_pnginfo.clone(),
            targets: self.opts.targets.clone(),
            partial: self.opts.partial,
            bytes: self.bytes,
            starts,
        }
    }

    fn key(&self) -> (u8, f64, u64) {
        (self.rank, self.number, self.seq)
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
    /// The prompt could not be written to disk (why).
    Store(String),
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
    /// Adds (or replaces) an entry, dropping the oldest beyond the caps; returns the ids
    /// dropped.
    pub fn insert(&mut self, id: String, entry: Json) -> Vec<String> {
        let size = serde_json::to_vec(&entry).map_or(0, |v| v.len());
        self.bytes += size;
        match self.entries.insert(id.clone(), (entry, size)) {
            Some((_, old)) => self.bytes -= old,
            None => self.order.push_back(id),
        }
        let mut dropped = Vec::new();
        while self.order.len() > self.cap || (self.bytes > self.max_bytes && self.order.len() > 1) {
            if let Some(old) = self.order.pop_front() {
                if let Some((_, n)) = self.entries.remove(&old) {
                    self.bytes -= n;
                }
                dropped.push(old);
            }
        }
        dropped
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
    /// The commit of its "started" mark, waited for when it ends (the run need not wait:
    /// the end's commit comes after it on the same writer).
    started: Option<Ticket>,
}

struct State {
    pending: Vec<Arc<QueueItem>>,
    pending_bytes: usize,
    /// Prompts accepted but still being written to disk (counted against the limits).
    reserved: usize,
    reserved_bytes: usize,
    running: Option<Running>,
    history: History,
    /// The order number of the newest history entry (history is stored in this order).
    history_order: u64,
    ids: HashSet<String>,
    counter: u64,
    seq: u64,
    free: Option<(bool, bool)>,
    /// No new prompts are accepted or started (a graceful stop is under way).
    draining: bool,
    stop: bool,
    /// The running prompt was cancelled by a stop: it stays queued (on disk) for the next start.
    requeue: bool,
    /// The prompt a stop put back.
    requeued: Option<String>,
    store: Option<Store>,
}

impl State {
    fn send(&self, ops: Vec<Op>) -> Ticket {
        match &self.store {
            Some(store) if !ops.is_empty() => store.send(ops),
            _ => Ticket::done(),
        }
    }

    /// Adds a history entry in memory and queues its commit (with the removal of its pending
    /// record and of the entries the caps drop).
    fn put_history(&mut self, prompt_id: &str, entry: Json) -> Ticket {
        self.history_order += 1;
        let order = self.history_order;
        let stored = self.store.is_some().then(|| entry.clone());
        let dropped = self.history.insert(prompt_id.to_string(), entry);
        let mut ops = Vec::new();
        if let Some(entry) = stored {
            ops.push(Op::RemovePending(vec![prompt_id.to_string()]));
            ops.push(Op::PutHistory {
                id: prompt_id.to_string(),
                order,
                entry,
            });
            if !dropped.is_empty() {
                ops.push(Op::RemoveHistory(dropped));
            }
        }
        self.send(ops)
    }
}

/// Logs a failed commit: the change holds in memory, and the server goes on.
fn log_store(what: &str, r: Result<(), StoreError>) {
    if let Err(e) = r {
        eprintln!("odelt serve: {what}: {e}");
    }
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
                reserved: 0,
                reserved_bytes: 0,
                running: None,
                history: History::new(max_history),
                history_order: 0,
                ids: HashSet::new(),
                counter: 0,
                seq: 0,
                free: None,
                draining: false,
                stop: false,
                requeue: false,
                requeued: None,
                store: None,
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

    /// Writes every change through `store` from now on.
    pub fn with_store(mut self, store: Store) -> Self {
        self.state
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .store = Some(store);
        self
    }

    /// Puts back what a previous server stored: its history (oldest first, order numbers
    /// kept), its counters, the prompts that could not be resumed (as history entries), and
    /// the waiting prompts (each already validated again; `rank` 0 for the one that was
    /// running). Called before the worker starts.
    pub fn restore(
        &self,
        history: Vec<(String, u64, Json)>,
        counters: (u64, u64),
        failed: Vec<(String, Json)>,
        items: Vec<QueueItem>,
    ) {
        let mut s = lock(&self.state);
        let mut dropped = Vec::new();
        for (id, order, entry) in history {
            s.history_order = s.history_order.max(order);
            dropped.extend(s.history.insert(id, entry));
        }
        let mut tickets = vec![s.send(if dropped.is_empty() {
            vec![]
        } else {
            vec![Op::RemoveHistory(dropped)]
        })];
        for (id, entry) in failed {
            tickets.push(s.put_history(&id, entry));
        }
        s.counter = s.counter.max(counters.0);
        s.seq = s.seq.max(counters.1);
        for item in items {
            s.seq = s.seq.max(item.seq);
            s.ids.insert(item.prompt_id.clone());
            s.pending_bytes += item.bytes;
            s.pending.push(Arc::new(item));
        }
        s.pending.sort_by(|a, b| {
            a.key()
                .partial_cmp(&b.key())
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        drop(s);
        for t in tickets {
            log_store("restoring the history", t.wait());
        }
    }

    /// ComfyUI's priority: an explicit `number`, else the counter (negated with `front`).
    /// Checks the id and the capacity, writes the prompt to disk (with a store), then queues
    /// it. Returns the number used.
    pub fn submit(
        &self,
        number: Option<f64>,
        front: bool,
        bytes: usize,
        build: impl FnOnce(f64, u64) -> QueueItem,
        prompt_id: &str,
    ) -> Result<f64, SubmitError> {
        let mut s = lock(&self.state);
        if s.stop || s.draining {
            return Err(SubmitError::Stopping);
        }
        if s.ids.contains(prompt_id) || s.history.contains(prompt_id) {
            return Err(SubmitError::Duplicate);
        }
        if s.pending.len() + s.reserved >= self.max_pending {
            return Err(SubmitError::Full {
                limit: self.max_pending,
            });
        }
        let waiting_bytes = s.pending_bytes + s.reserved_bytes;
        if (!s.pending.is_empty() || s.reserved > 0)
            && waiting_bytes.saturating_add(bytes) > self.max_pending_bytes
        {
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
        let ticket = if s.store.is_some() {
            s.send(vec![
                Op::PutPending(Box::new(item.record(item.starts))),
                Op::Counters {
                    counter: s.counter,
                    seq: s.seq,
                },
            ])
        } else {
            Ticket::done()
        };
        s.ids.insert(item.prompt_id.clone());
        s.reserved += 1;
        s.reserved_bytes += item.bytes;
        drop(s);
        let written = ticket.wait();
        let mut s = lock(&self.state);
        s.reserved -= 1;
        s.reserved_bytes -= item.bytes;
        if let Err(e) = written {
            s.ids.remove(&item.prompt_id);
            return Err(SubmitError::Store(e.to_string()));
        }
        let pos = s.pending.partition_point(|p| {
            p.key().partial_cmp(&item.key()) == Some(std::cmp::Ordering::Less)
        });
        s.pending_bytes += item.bytes;
        s.pending.insert(pos, item);
        drop(s);
        self.cond.notify_all();
        Ok(number)
    }

    /// Blocks until there is work: pending `/free` requests are handled between prompts. A
    /// prompt is marked as started on disk as it is handed out (the commit runs alongside the
    /// prompt; [`Queue::finish`] waits for it).
    pub fn next(&self) -> Next {
        let mut s = lock(&self.state);
        loop {
            if s.stop || s.draining {
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
                let started = s
                    .store
                    .is_some()
                    .then(|| s.send(vec![Op::PutPending(Box::new(item.record(item.starts + 1)))]));
                s.running = Some(Running {
                    item: item.clone(),
                    cancel: cancel.clone(),
                    started,
                });
                drop(s);
                return Next::Run(item, cancel);
            }
            s = self.cond.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Records the finished prompt in history (on disk too, replacing its queue record) and
    /// clears `running`. Returns once the entry is durable.
    pub fn finish(&self, prompt_id: &str, entry: Json) {
        let mut s = lock(&self.state);
        let started = s.running.take().and_then(|r| r.started);
        s.ids.remove(prompt_id);
        let ticket = s.put_history(prompt_id, entry);
        drop(s);
        self.cond.notify_all();
        if let Some(t) = started {
            log_store(&format!("marking prompt {prompt_id} as started"), t.wait());
        }
        log_store(
            &format!("storing the history of prompt {prompt_id}"),
            ticket.wait(),
        );
    }

    /// Whether the running prompt was cancelled by a stop (then it stays queued on disk and
    /// gets no history entry: the next server runs it again).
    pub fn stopping_requeues(&self) -> bool {
        lock(&self.state).requeue
    }

    /// Clears `running` for a prompt a stop cancelled; its record stays on disk.
    pub fn requeue_running(&self) {
        let mut s = lock(&self.state);
        s.requeued = s.running.take().map(|r| r.item.prompt_id.clone());
        drop(s);
        self.cond.notify_all();
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

    /// Removes every pending prompt; returns how many (a failed commit is logged: the prompts
    /// would come back after a restart).
    pub fn clear_pending(&self) -> usize {
        let mut s = lock(&self.state);
        s.pending_bytes = 0;
        let ids: Vec<String> = s.pending.drain(..).map(|p| p.prompt_id.clone()).collect();
        for id in &ids {
            s.ids.remove(id);
        }
        let n = ids.len();
        let ticket = if ids.is_empty() {
            Ticket::done()
        } else {
            s.send(vec![Op::RemovePending(ids)])
        };
        drop(s);
        log_store("clearing the queue", ticket.wait());
        n
    }

    /// Removes the given pending prompts; returns how many were pending (a failed commit is
    /// logged, as for [`Queue::clear_pending`]).
    pub fn delete_pending(&self, ids: &[String]) -> usize {
        let mut s = lock(&self.state);
        let wanted: HashSet<&String> = ids.iter().collect();
        let mut removed = Vec::new();
        s.pending.retain(|p| {
            let hit = wanted.contains(&p.prompt_id);
            if hit {
                removed.push(p.prompt_id.clone());
            }
            !hit
        });
        s.pending_bytes = s.pending.iter().map(|p| p.bytes).sum();
        for id in &removed {
            s.ids.remove(id);
        }
        let n = removed.len();
        let ticket = if removed.is_empty() {
            Ticket::done()
        } else {
            s.send(vec![Op::RemovePending(removed)])
        };
        drop(s);
        log_store("deleting queued prompts", ticket.wait());
        n
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

    /// Runs `f` on the history (to read it; changes go through the methods that store them).
    pub fn with_history<R>(&self, f: impl FnOnce(&History) -> R) -> R {
        f(&lock(&self.state).history)
    }

    /// Removes the given history entries (`clear`: all of them); returns how many went.
    pub fn delete_history(&self, clear: bool, ids: &[String]) -> Result<usize, StoreError> {
        let mut s = lock(&self.state);
        let mut ops = Vec::new();
        let n = if clear {
            let n = s.history.len();
            s.history.clear();
            ops.push(Op::ClearHistory);
            n
        } else {
            0
        };
        let n = n + s.history.delete(ids);
        if !clear && !ids.is_empty() {
            ops.push(Op::RemoveHistory(ids.to_vec()));
        }
        let ticket = s.send(ops);
        drop(s);
        ticket.wait().map(|()| n)
    }

    /// Takes no more prompts (`POST /prompt` answers 503 `shutting_down`) and starts none;
    /// the running one goes on.
    pub fn drain(&self) {
        lock(&self.state).draining = true;
        self.cond.notify_all();
    }

    /// Waits up to `timeout` for the running prompt to end; returns whether none runs.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        let mut s = lock(&self.state);
        while s.running.is_some() {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self
                .cond
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Stops the worker, cancelling the running prompt, which stays queued on disk.
    pub fn stop(&self) {
        let mut s = lock(&self.state);
        s.stop = true;
        s.requeue = s.running.is_some();
        if let Some(r) = &s.running {
            r.cancel.cancel();
        }
        drop(s);
        self.cond.notify_all();
    }

    /// The prompt a stop cancelled and put back, if any.
    pub fn requeued(&self) -> Option<String> {
        lock(&self.state).requeued.clone()
    }

    /// Commits what is queued for disk and closes the database.
    pub fn close_store(&self) {
        let store = lock(&self.state).store.take();
        if let Some(mut store) = store {
            store.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, number: f64, seq: u64) -> QueueItem {
        QueueItem {
            rank: 1,
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
            starts: 0,
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
