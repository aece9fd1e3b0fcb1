//! The WebSocket (`/ws?clientId=`): `status` on connect, then the events of the client's
//! prompts; answers the frontend's `feature_flags`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use serde_json::{json, Value as Json};

use crate::executor::new_prompt_id;
use crate::serve::body::ApiError;
use crate::serve::extract::{query, Q, S};
use crate::serve::hub::{status_message, Out};
use crate::serve::state::Shared;

fn valid_client_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

pub(crate) async fn ws(State(s): S, q: Q, upgrade: WebSocketUpgrade) -> Result<Response, ApiError> {
    let q = query(q)?;
    let client_id = match q.get("clientId").filter(|c| !c.is_empty()) {
        Some(c) if valid_client_id(c) => c.clone(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_client_id",
                "clientId may only contain letters, digits, '-', '_' and '.' (at most 128)",
            ))
        }
        None => new_prompt_id().replace('-', ""),
    };
    Ok(upgrade
        .max_message_size(1 << 16)
        .on_upgrade(move |socket| ws_session(s, socket, client_id)))
}

async fn ws_session(s: Arc<Shared>, mut socket: WebSocket, client_id: String) {
    let (key, mut rx, preview_metadata) = s.hub.register(&client_id);
    let hello = status_message(s.queue.remaining(), Some(&client_id)).to_string();
    let mut greeting = vec![hello];
    if let Ok(c) = s.current.lock() {
        if let Some(c) = c
            .as_ref()
            .filter(|c| c.client.as_deref().is_none_or(|id| id == client_id))
        {
            greeting.push(
                json!({"type": "executing", "data": {"node": c.node_id, "display_node": c.node_id,
                                                     "prompt_id": c.prompt_id}})
                .to_string(),
            );
        }
    }
    let mut ok = true;
    for g in greeting {
        if socket.send(Message::Text(g.into())).await.is_err() {
            ok = false;
            break;
        }
    }
    if ok {
        loop {
            tokio::select! {
                out = rx.recv() => {
                    let msg = match out {
                        Some(Out::Text(t)) => Message::Text(t.to_string().into()),
                        Some(Out::Binary(b)) => Message::Binary(b.to_vec().into()),
                        None => break,
                    };
                    if socket.send(msg).await.is_err() {
                        break;
                    }
                }
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Text(t))) => {
                        let Ok(v) = serde_json::from_str::<Json>(t.as_str()) else { continue };
                        if v["type"] == "feature_flags" {
                            let wants = v["data"]["supports_preview_metadata"].as_bool().unwrap_or(false);
                            preview_metadata.store(wants, Ordering::Relaxed);
                            let reply = json!({"type": "feature_flags", "data": s.features()});
                            if socket.send(Message::Text(reply.to_string().into())).await.is_err() {
                                break;
                            }
                        }
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
            }
        }
    }
    s.hub.unregister(key);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_id_shape() {
        assert!(valid_client_id("abc-123_x"));
        assert!(!valid_client_id("a b"));
    }
}
