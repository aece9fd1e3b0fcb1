//! WebSocket connections keyed by ComfyUI `clientId`, and the messages sent to them:
//! JSON text frames and ComfyUI's binary frames (`[u32 BE event type][payload]`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value as Json};
use tokio::sync::mpsc;

use crate::sync::lock;

/// Binary event type: `[u32 1][u32 image type][image bytes]`.
pub const PREVIEW_IMAGE: u32 = 1;
/// Binary event type: `[u32 3][u32 node id length][node id][text]`.
pub const TEXT: u32 = 3;
/// Binary event type: `[u32 4][u32 json length][json metadata][image bytes]`.
pub const PREVIEW_IMAGE_WITH_METADATA: u32 = 4;

/// Frames queued per socket before a slow client starts losing messages.
const CHANNEL_CAPACITY: usize = 4096;

/// One frame to send.
#[derive(Clone, Debug)]
pub(crate) enum Out {
    Text(Arc<str>),
    Binary(Arc<[u8]>),
}

struct Conn {
    client_id: String,
    tx: mpsc::Sender<Out>,
    preview_metadata: Arc<AtomicBool>,
}

pub(crate) struct Hub {
    conns: Mutex<HashMap<u64, Conn>>,
    next: AtomicU64,
}

/// ComfyUI's `status` message (`sid` only on connect).
pub(crate) fn status_message(queue_remaining: usize, sid: Option<&str>) -> Json {
    let mut data = json!({"status": {"exec_info": {"queue_remaining": queue_remaining}}});
    if let Some(sid) = sid {
        data["sid"] = json!(sid);
    }
    json!({"type": "status", "data": data})
}

/// `[u32 1][u32 1=JPEG|2=PNG][bytes]`.
pub fn preview_frame(mime: &str, image: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + image.len());
    f.extend_from_slice(&PREVIEW_IMAGE.to_be_bytes());
    let ty: u32 = if mime == "image/jpeg" { 1 } else { 2 };
    f.extend_from_slice(&ty.to_be_bytes());
    f.extend_from_slice(image);
    f
}

/// `[u32 4][u32 len][json][bytes]` with ComfyUI's metadata fields.
pub fn preview_frame_with_metadata(
    mime: &str,
    image: &[u8],
    node_id: &str,
    prompt_id: &str,
) -> Vec<u8> {
    let meta = json!({"node_id": node_id, "prompt_id": prompt_id, "display_node_id": node_id,
                      "parent_node_id": node_id, "real_node_id": node_id, "image_type": mime})
    .to_string();
    let mut f = Vec::with_capacity(8 + meta.len() + image.len());
    f.extend_from_slice(&PREVIEW_IMAGE_WITH_METADATA.to_be_bytes());
    f.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    f.extend_from_slice(meta.as_bytes());
    f.extend_from_slice(image);
    f
}

/// `[u32 3][u32 node id length][node id][text]`.
pub fn text_frame(node_id: &str, text: &str) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + node_id.len() + text.len());
    f.extend_from_slice(&TEXT.to_be_bytes());
    f.extend_from_slice(&(node_id.len() as u32).to_be_bytes());
    f.extend_from_slice(node_id.as_bytes());
    f.extend_from_slice(text.as_bytes());
    f
}

impl Hub {
    pub fn new() -> Self {
        Hub {
            conns: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }

    /// Adds a socket; returns its key, its frame receiver and its preview-metadata flag.
    pub fn register(&self, client_id: &str) -> (u64, mpsc::Receiver<Out>, Arc<AtomicBool>) {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let flag = Arc::new(AtomicBool::new(false));
        lock(&self.conns).insert(
            key,
            Conn {
                client_id: client_id.to_string(),
                tx,
                preview_metadata: flag.clone(),
            },
        );
        (key, rx, flag)
    }

    pub fn unregister(&self, key: u64) {
        lock(&self.conns).remove(&key);
    }

    /// Number of open sockets.
    pub fn len(&self) -> usize {
        lock(&self.conns).len()
    }

    /// Drops every socket's sender, which ends their connections.
    pub fn close_all(&self) {
        lock(&self.conns).clear();
    }

    fn send_with(&self, client: Option<&str>, mut make: impl FnMut(&Conn) -> Out) {
        let conns = lock(&self.conns);
        for c in conns.values() {
            if client.is_none_or(|id| id == c.client_id) {
                // A full channel means the client stopped reading: it loses this frame.
                let _ = c.tx.try_send(make(c));
            }
        }
    }

    /// A JSON message to `client`'s sockets, or to every socket for `None`.
    pub fn send_json(&self, client: Option<&str>, msg: &Json) {
        let text: Arc<str> = Arc::from(msg.to_string());
        self.send_with(client, |_| Out::Text(text.clone()));
    }

    /// A binary frame.
    pub fn send_binary(&self, client: Option<&str>, frame: Vec<u8>) {
        let frame: Arc<[u8]> = Arc::from(frame);
        self.send_with(client, |_| Out::Binary(frame.clone()));
    }

    /// A preview picture: type 4 to sockets that asked for `supports_preview_metadata`,
    /// type 1 to the others.
    pub fn send_preview(
        &self,
        client: Option<&str>,
        mime: &str,
        image: &[u8],
        node_id: &str,
        prompt_id: &str,
    ) {
        let mut plain: Option<Arc<[u8]>> = None;
        let mut with_meta: Option<Arc<[u8]>> = None;
        self.send_with(client, |c| {
            if c.preview_metadata.load(Ordering::Relaxed) {
                Out::Binary(
                    with_meta
                        .get_or_insert_with(|| {
                            Arc::from(preview_frame_with_metadata(mime, image, node_id, prompt_id))
                        })
                        .clone(),
                )
            } else {
                Out::Binary(
                    plain
                        .get_or_insert_with(|| Arc::from(preview_frame(mime, image)))
                        .clone(),
                )
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_follow_comfyui_layout() {
        let f = preview_frame("image/png", b"PNGDATA");
        assert_eq!(&f[0..4], &[0, 0, 0, 1]);
        assert_eq!(&f[4..8], &[0, 0, 0, 2]);
        assert_eq!(&f[8..], b"PNGDATA");
        assert_eq!(&preview_frame("image/jpeg", b"x")[4..8], &[0, 0, 0, 1]);
        let t = text_frame("12", "hello");
        assert_eq!(&t[0..4], &[0, 0, 0, 3]);
        assert_eq!(&t[4..8], &[0, 0, 0, 2]);
        assert_eq!(&t[8..10], b"12");
        assert_eq!(&t[10..], b"hello");
        let m = preview_frame_with_metadata("image/png", b"IMG", "5", "p");
        assert_eq!(&m[0..4], &[0, 0, 0, 4]);
        let len = u32::from_be_bytes([m[4], m[5], m[6], m[7]]) as usize;
        let meta: Json = serde_json::from_slice(&m[8..8 + len]).unwrap();
        assert_eq!(meta["node_id"], "5");
        assert_eq!(meta["image_type"], "image/png");
        assert_eq!(&m[8 + len..], b"IMG");
    }

    #[test]
    fn messages_reach_only_their_client_unless_broadcast() {
        let hub = Hub::new();
        let (_, mut a, _) = hub.register("a");
        let (_, mut b, _) = hub.register("b");
        hub.send_json(Some("a"), &json!({"x": 1}));
        hub.send_json(None, &json!({"x": 2}));
        let text = |o: Option<Out>| match o {
            Some(Out::Text(t)) => t.to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(text(a.try_recv().ok()), r#"{"x":1}"#);
        assert_eq!(text(a.try_recv().ok()), r#"{"x":2}"#);
        assert_eq!(text(b.try_recv().ok()), r#"{"x":2}"#);
        assert!(b.try_recv().is_err());
        assert_eq!(status_message(3, Some("s"))["data"]["sid"], "s");
    }
}
