//! The durable queue and history of `odelt serve`: one embedded database file,
//! `<state-dir>/serve.redb`.
//!
//! **Why redb.** [redb](https://www.redb.org) is a pure-Rust, single-file, ACID key-value store
//! (copy-on-write B-trees, checksummed commit slots, a file lock against a second server on the
//! same state). It builds in seconds with no C toolchain, which matters on the 2-core CI, while
//! SQLite through `rusqlite`'s bundled build compiles a large C file for features (SQL, joins,
//! indexes) this store does not need: it keeps two maps by prompt id and a few counters. The 2.x
//! line is used because it keeps the workspace's MSRV (1.85).
//!
//! **Tables.** `pending`: prompt id → the JSON record of a prompt waiting or running
//! ([`PendingRecord`]: the prompt, its `number` and arrival `seq`, `extra_data`, and how many
//! times it was started); `history`: prompt id → `{"order": n, "entry": {...}}` (ComfyUI's
//! history entry: status, outputs, messages with timestamps); `meta`: the queue's `number`
//! counter, the arrival counter and the history order counter.
//!
//! **Writes.** Every change is sent to one writer thread, which commits whatever has arrived
//! meanwhile in one transaction with immediate durability (fsync) and then answers each sender
//! (group commit: 32 concurrent `POST /prompt` cost a few fsyncs, not 32). Callers enqueue while
//! holding the queue's lock, so the database sees changes in the queue's order, and wait for
//! the answer after releasing it. A batch that fails is retried change by change, so one bad
//! change fails only its own caller.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

const PENDING: TableDefinition<&str, &[u8]> = TableDefinition::new("pending");
const HISTORY: TableDefinition<&str, &[u8]> = TableDefinition::new("history");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// The database file inside the state directory.
pub const DB_FILE: &str = "serve.redb";

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory could not be created.
    #[error("cannot create the state directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The database could not be opened (another server holds it, or it is damaged).
    #[error("cannot open the queue database {path}: {message}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        message: String,
    },
    /// Reading the stored queue or history failed.
    #[error("cannot read the queue database {path}: {message}")]
    Read {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A change could not be committed.
    #[error("cannot write the queue database: {0}")]
    Write(String),
    /// The writer thread is gone (the server is stopping).
    #[error("the queue database is closed")]
    Closed,
}

/// A prompt waiting (or running) as stored: enough to validate and queue it again.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct PendingRecord {
    pub prompt_id: String,
    pub number: f64,
    pub seq: u64,
    pub prompt: Json,
    pub extra_data: Json,
    pub outputs: Vec<String>,
    pub client_id: Option<String>,
    pub extra_pnginfo: Option<Json>,
    pub targets: Option<Vec<String>>,
    pub partial: bool,
    pub bytes: usize,
    /// How many times a server started running it (1 or more: it was running at a stop).
    #[serde(default)]
    pub starts: u32,
}

#[derive(Serialize, Deserialize)]
struct HistoryRecord {
    order: u64,
    entry: Json,
}

/// One change to the stored state.
pub(crate) enum Op {
    PutPending(Box<PendingRecord>),
    RemovePending(Vec<String>),
    PutHistory { id: String, order: u64, entry: Json },
    RemoveHistory(Vec<String>),
    ClearHistory,
    Counters { counter: u64, seq: u64 },
}

/// What was stored when the server last ran.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// Waiting and running prompts, in no particular order.
    pub pending: Vec<PendingRecord>,
    /// History entries, oldest first, with their order numbers.
    pub history: Vec<(String, u64, Json)>,
    pub counter: u64,
    pub seq: u64,
    /// Records that could not be read (skipped), with why.
    pub damaged: Vec<String>,
}

struct Batch {
    ops: Vec<Op>,
    done: Sender<Result<(), String>>,
}

/// A change on its way to disk; [`Ticket::wait`] blocks until it is committed.
#[must_use = "wait for the commit before telling anyone the change happened"]
pub(crate) struct Ticket(Option<Receiver<Result<(), String>>>);

impl Ticket {
    /// A ticket for no change (in-memory mode).
    pub fn done() -> Ticket {
        Ticket(None)
    }
    /// Blocks until the change is durable.
    pub fn wait(self) -> Result<(), StoreError> {
        match self.0 {
            None => Ok(()),
            Some(rx) => match rx.recv() {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(StoreError::Write(e)),
                Err(_) => Err(StoreError::Closed),
            },
        }
    }
}

/// The open database and its writer thread.
pub(crate) struct Store {
    tx: Option<Sender<Batch>>,
    writer: Option<JoinHandle<()>>,
    path: PathBuf,
}

fn open_err(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Open {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn read_err(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl Store {
    /// Opens (or creates) `<dir>/serve.redb` and reads what it holds.
    pub fn open(dir: &Path) -> Result<(Store, Loaded), StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => open_err(
                &path,
                "another odelt server uses this state directory (pick another with --state-dir)",
            ),
            other => open_err(&path, other),
        })?;
        // Create the tables so that the first read finds them.
        let w = db.begin_write().map_err(|e| open_err(&path, e))?;
        w.open_table(PENDING).map_err(|e| open_err(&path, e))?;
        w.open_table(HISTORY).map_err(|e| open_err(&path, e))?;
        w.open_table(META).map_err(|e| open_err(&path, e))?;
        w.commit().map_err(|e| open_err(&path, e))?;
        let loaded = load(&db, &path)?;
        let (tx, rx) = crossbeam_channel::unbounded::<Batch>();
        let writer = std::thread::Builder::new()
            .name("odelt-serve-store".into())
            .spawn(move || writer(db, rx))
            .map_err(|e| open_err(&path, format!("cannot start the writer thread: {e}")))?;
        Ok((
            Store {
                tx: Some(tx),
                writer: Some(writer),
                path,
            },
            loaded,
        ))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues `ops` for the next commit (does not block).
    pub fn send(&self, ops: Vec<Op>) -> Ticket {
        let (done, rx) = crossbeam_channel::bounded(1);
        match &self.tx {
            Some(tx) if tx.send(Batch { ops, done }).is_ok() => Ticket(Some(rx)),
            _ => {
                let (closed_tx, closed_rx) = crossbeam_channel::bounded(1);
                let _ = closed_tx.send(Err("the queue database is closed".to_string()));
                Ticket(Some(closed_rx))
            }
        }
    }

    /// Commits what is queued and closes the database (cleanly, so the next open needs no
    /// repair).
    pub fn close(&mut self) {
        self.tx = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

fn load(db: &Database, path: &Path) -> Result<Loaded, StoreError> {
    let r = db.begin_read().map_err(|e| read_err(path, e))?;
    let mut out = Loaded::default();
    let pending = r.open_table(PENDING).map_err(|e| read_err(path, e))?;
    for row in pending.iter().map_err(|e| read_err(path, e))? {
        let (k, v) = row.map_err(|e| read_err(path, e))?;
        match serde_json::from_slice::<PendingRecord>(v.value()) {
            Ok(rec) if rec.prompt_id == k.value() => out.pending.push(rec),
            Ok(_) => out
                .damaged
                .push(format!("pending {}: id does not match its key", k.value())),
            Err(e) => out.damaged.push(format!("pending {}: {e}", k.value())),
        }
    }
    let history = r.open_table(HISTORY).map_err(|e| read_err(path, e))?;
    for row in history.iter().map_err(|e| read_err(path, e))? {
        let (k, v) = row.map_err(|e| read_err(path, e))?;
        match serde_json::from_slice::<HistoryRecord>(v.value()) {
            Ok(rec) => out
                .history
                .push((k.value().to_string(), rec.order, rec.entry)),
            Err(e) => out.damaged.push(format!("history {}: {e}", k.value())),
        }
    }
    out.history.sort_by_key(|(_, order, _)| *order);
    let meta = r.open_table(META).map_err(|e| read_err(path, e))?;
    let get = |key: &str| -> Result<u64, StoreError> {
        Ok(meta
            .get(key)
            .map_err(|e| read_err(path, e))?
            .map_or(0, |v| v.value()))
    };
    out.counter = get("counter")?;
    out.seq = get("seq")?;
    Ok(out)
}

fn writer(db: Database, rx: Receiver<Batch>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < 512 {
            match rx.try_recv() {
                Ok(b) => batch.push(b),
                Err(_) => break,
            }
        }
        let all = commit(&db, batch.iter().flat_map(|b| b.ops.iter()));
        if all.is_ok() || batch.len() == 1 {
            for b in &batch {
                let _ = b.done.send(all.clone());
            }
            continue;
        }
        // One change spoilt the batch: commit each caller's changes alone.
        for b in &batch {
            let _ = b.done.send(commit(&db, b.ops.iter()));
        }
    }
    // Dropping `db` here closes the file cleanly.
}

fn commit<'a>(db: &Database, ops: impl Iterator<Item = &'a Op>) -> Result<(), String> {
    let w = db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut pending = w.open_table(PENDING).map_err(|e| e.to_string())?;
        let mut history = w.open_table(HISTORY).map_err(|e| e.to_string())?;
        let mut meta = w.open_table(META).map_err(|e| e.to_string())?;
        for op in ops {
            apply(op, &mut pending, &mut history, &mut meta).map_err(|e| e.to_string())?;
        }
    }
    w.commit().map_err(|e| e.to_string())
}

type Table<'t, V> = redb::Table<'t, &'static str, V>;

fn apply(
    op: &Op,
    pending: &mut Table<'_, &'static [u8]>,
    history: &mut Table<'_, &'static [u8]>,
    meta: &mut Table<'_, u64>,
) -> Result<(), String> {
    let s = |e: redb::StorageError| e.to_string();
    match op {
        Op::PutPending(rec) => {
            let bytes = serde_json::to_vec(rec).map_err(|e| e.to_string())?;
            pending
                .insert(rec.prompt_id.as_str(), bytes.as_slice())
                .map_err(s)?;
        }
        Op::RemovePending(ids) => {
            for id in ids {
                pending.remove(id.as_str()).map_err(s)?;
            }
        }
        Op::PutHistory { id, order, entry } => {
            let rec = HistoryRecord {
                order: *order,
                entry: entry.clone(),
            };
            let bytes = serde_json::to_vec(&rec).map_err(|e| e.to_string())?;
            history.insert(id.as_str(), bytes.as_slice()).map_err(s)?;
        }
        Op::RemoveHistory(ids) => {
            for id in ids {
                history.remove(id.as_str()).map_err(s)?;
            }
        }
        Op::ClearHistory => history.retain(|_, _| false).map_err(s)?,
        Op::Counters { counter, seq } => {
            meta.insert("counter", *counter).map_err(s)?;
            meta.insert("seq", *seq).map_err(s)?;
        }
    }
    Ok(())
}

/// Whether `name` is a partial output left by a writer that stopped: `.{name}.tmp-{pid}`, as
/// the nodes' PNG and latent writers name files before renaming them into place.
pub(crate) fn temp_output_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (_, pid) = rest.rsplit_once(".tmp-")?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Whether the process that wrote a temporary file may still be writing it.
fn writer_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let proc_dir = Path::new("/proc");
    if proc_dir.join("self").exists() {
        return proc_dir.join(pid.to_string()).exists();
    }
    // No /proc: assume the writer may be alive unless the file is old (checked by the caller).
    true
}

/// Removes partial outputs (`.{name}.tmp-{pid}`) whose writer is gone, under `root` (at most
/// 16 folders deep, never following symlinks). Returns the files removed.
pub(crate) fn remove_stale_temp_outputs(root: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            let path = e.path();
            if ft.is_dir() {
                if depth < 16 {
                    stack.push((path, depth + 1));
                }
                continue;
            }
            if !ft.is_file() {
                continue;
            }
            let Some(pid) = e.file_name().to_str().and_then(temp_output_pid) else {
                continue;
            };
            let old = e
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 3600);
            let stale = pid != std::process::id() && (!writer_alive(pid) || old);
            if stale && std::fs::remove_file(&path).is_ok() {
                removed.push(path);
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("odelt-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn rec(id: &str, seq: u64) -> PendingRecord {
        PendingRecord {
            prompt_id: id.into(),
            number: seq as f64,
            seq,
            prompt: json!({"1": {"class_type": "X", "inputs": {}}}),
            extra_data: json!({}),
            outputs: vec!["1".into()],
            client_id: None,
            extra_pnginfo: None,
            targets: None,
            partial: true,
            bytes: 10,
            starts: 0,
        }
    }

    #[test]
    fn changes_survive_reopening() {
        let d = dir("reopen");
        {
            let (store, loaded) = Store::open(&d).unwrap();
            assert!(loaded.pending.is_empty() && loaded.history.is_empty());
            store
                .send(vec![
                    Op::PutPending(Box::new(rec("a", 1))),
                    Op::PutPending(Box::new(rec("b", 2))),
                    Op::Counters { counter: 2, seq: 2 },
                ])
                .wait()
                .unwrap();
            let tickets: Vec<Ticket> = (0..20)
                .map(|k| {
                    store.send(vec![Op::PutHistory {
                        id: format!("h{k}"),
                        order: k,
                        entry: json!({"k": k}),
                    }])
                })
                .collect();
            for t in tickets {
                t.wait().unwrap();
            }
            store
                .send(vec![
                    Op::RemovePending(vec!["a".into()]),
                    Op::RemoveHistory(vec!["h0".into()]),
                ])
                .wait()
                .unwrap();
            // A second server on the same state is refused with a clear reason.
            let Err(e) = Store::open(&d) else {
                panic!("opened twice")
            };
            assert!(e.to_string().contains("another odelt server"), "{e}");
        }
        let (mut store, loaded) = Store::open(&d).unwrap();
        assert_eq!(loaded.pending, vec![rec("b", 2)]);
        assert_eq!((loaded.counter, loaded.seq), (2, 2));
        assert_eq!(loaded.history.len(), 19);
        assert_eq!(loaded.history[0].0, "h1");
        assert_eq!(loaded.history[18].2, json!({"k": 19}));
        store
            .send(vec![Op::RemovePending(vec!["b".into()]), Op::ClearHistory])
            .wait()
            .unwrap();
        store.close();
        assert!(matches!(
            store.send(vec![Op::ClearHistory]).wait(),
            Err(StoreError::Write(_))
        ));
        let (_s, loaded) = Store::open(&d).unwrap();
        assert!(loaded.pending.is_empty() && loaded.history.is_empty());
        drop(_s);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn stale_temp_outputs_are_recognised_and_removed() {
        assert_eq!(temp_output_pid(".odelt_00001_.png.tmp-123"), Some(123));
        assert_eq!(temp_output_pid("odelt_00001_.png.tmp-123"), None);
        assert_eq!(temp_output_pid(".odelt_00001_.png.tmp-"), None);
        assert_eq!(temp_output_pid(".x.tmp-12a"), None);
        let d = dir("temp");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        // A pid far above Linux's pid_max is never alive.
        std::fs::write(d.join("sub/.a_00001_.png.tmp-4999999"), b"half").unwrap();
        let mine = format!(".b_00001_.png.tmp-{}", std::process::id());
        std::fs::write(d.join(&mine), b"being written").unwrap();
        std::fs::write(d.join("a_00001_.png"), b"done").unwrap();
        let removed = remove_stale_temp_outputs(&d);
        if Path::new("/proc/self").exists() {
            assert_eq!(removed, vec![d.join("sub/.a_00001_.png.tmp-4999999")]);
        }
        assert!(d.join(&mine).exists() && d.join("a_00001_.png").exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
