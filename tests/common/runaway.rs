//! A runaway upstream: answers every request (OpenAI chat-completions or Anthropic
//! Messages, as configured) with a first small piece of text, then 64 KiB pieces forever
//! (a stream), or one huge answer (not streamed). It counts the bytes it managed to send,
//! so a test can tell how much Relais pulled from it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use serde_json::{json, Value};

/// One piece of the endless stream.
pub const PIECE: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    OpenAi,
    Anthropic,
}

impl Api {
    pub fn name(self) -> &'static str {
        match self {
            Api::OpenAi => "openai",
            Api::Anthropic => "anthropic",
        }
    }
}

pub struct Runaway {
    pub addr: SocketAddr,
    /// Bytes of streamed bodies handed to the connection so far.
    pub sent: Arc<AtomicU64>,
}

impl Runaway {
    pub async fn start(api: Api) -> Runaway {
        let sent = Arc::new(AtomicU64::new(0));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state((api, sent.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Runaway { addr, sent }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

fn openai_chunk(delta: Value) -> String {
    let c = json!({"id": "chatcmpl-run", "object": "chat.completion.chunk",
        "created": 1_700_000_000, "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": null}]});
    format!("data: {c}\n\n")
}

fn anthropic_event(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

fn head(api: Api) -> String {
    match api {
        Api::OpenAi => openai_chunk(json!({"role": "assistant", "content": "hi"})),
        Api::Anthropic => [
            anthropic_event(
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_run", "type": "message",
                    "role": "assistant", "model": "m", "content": [], "stop_reason": null,
                    "stop_sequence": null, "usage": {"input_tokens": 12, "output_tokens": 1}}}),
            ),
            anthropic_event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}}),
            ),
            anthropic_event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": "hi"}}),
            ),
        ]
        .concat(),
    }
}

fn piece(api: Api) -> String {
    let text = "x".repeat(PIECE);
    match api {
        Api::OpenAi => openai_chunk(json!({"content": text})),
        Api::Anthropic => anthropic_event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": text}}),
        ),
    }
}

/// A whole answer of `len` bytes of text.
fn whole(api: Api, len: usize) -> Value {
    let text = "x".repeat(len);
    match api {
        Api::OpenAi => json!({"id": "chatcmpl-run", "object": "chat.completion",
            "created": 1_700_000_000, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}),
        Api::Anthropic => json!({"id": "msg_run", "type": "message", "role": "assistant",
            "model": "m", "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 5, "output_tokens": 7}}),
    }
}

async fn handle(State((api, sent)): State<(Api, Arc<AtomicU64>)>, body: Bytes) -> Response {
    let req: Value = serde_json::from_slice(&body).unwrap_or_default();
    if req["stream"] != json!(true) {
        let body = serde_json::to_vec(&whole(api, 4 * 1024 * 1024)).unwrap_or_default();
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
    }
    let first = Bytes::from(head(api));
    let piece = Bytes::from(piece(api));
    let s = futures_util::stream::unfold(Some(first), move |next| {
        let sent = sent.clone();
        let piece = piece.clone();
        async move {
            let b = next.unwrap_or_else(|| piece.clone());
            sent.fetch_add(b.len() as u64, Ordering::Relaxed);
            Some((Ok::<_, std::io::Error>(b), None))
        }
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(s))
        .unwrap()
}
