//! An in-process fake upstream (OpenAI chat-completions or Anthropic Messages: it answers
//! any path) whose behaviour each test scripts, and which records every request it gets.
//!
//! Replies are taken from a queue in order; when the queue is empty the reply set for the
//! requested upstream `model` (if any, `set_model_default`) is used, else the default reply
//! (a 500 saying nothing was scripted, unless the test set another).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

/// How a scripted SSE response ends after its last frame.
#[derive(Clone, Debug)]
pub enum StreamEnd {
    /// The body ends normally (whatever the frames said).
    Close,
    /// The connection is cut (100 ms after the last frame, so that the frames were
    /// delivered): the body fails without its terminating chunk.
    Abort,
    /// The body stays open and silent until the test ends.
    Hang,
    /// The body stays open, sending an SSE comment every interval (so a closed
    /// connection is noticed by the fake on its next write).
    Trickle(Duration),
}

#[derive(Clone, Debug)]
pub enum Reply {
    /// A JSON body with this status.
    Json {
        status: u16,
        body: Value,
        headers: Vec<(String, String)>,
    },
    /// Any bytes with this status and content type (malformed JSON, empty bodies, text).
    Raw {
        status: u16,
        content_type: String,
        body: Vec<u8>,
        headers: Vec<(String, String)>,
    },
    /// `text/event-stream`: each frame (written verbatim) after its delay, then `end`.
    Sse {
        frames: Vec<(Duration, String)>,
        end: StreamEnd,
    },
    /// Never answers: not even a status line, until the test ends.
    Hang,
    /// A 200 `application/json` head, then a space every interval, never finishing.
    TrickleJson(Duration),
    /// Waits, then answers as the inner reply (e.g. a non-streaming server that sends its
    /// response head only once the whole generation is done).
    Delayed(Duration, Box<Reply>),
}

impl Reply {
    pub fn json(body: Value) -> Reply {
        Reply::Json {
            status: 200,
            body,
            headers: vec![],
        }
    }

    pub fn error(status: u16, body: Value) -> Reply {
        Reply::Json {
            status,
            body,
            headers: vec![],
        }
    }

    pub fn error_retry_after(status: u16, body: Value, retry_after: &str) -> Reply {
        Reply::Json {
            status,
            body,
            headers: vec![("retry-after".to_owned(), retry_after.to_owned())],
        }
    }

    pub fn raw(status: u16, content_type: &str, body: &[u8]) -> Reply {
        Reply::Raw {
            status,
            content_type: content_type.to_owned(),
            body: body.to_vec(),
            headers: vec![],
        }
    }

    /// SSE frames without delays, ending normally.
    pub fn sse(frames: Vec<String>) -> Reply {
        Reply::Sse {
            frames: frames.into_iter().map(|f| (Duration::ZERO, f)).collect(),
            end: StreamEnd::Close,
        }
    }

    /// SSE frames ending normally, the first one sent after `latency` (the time to first
    /// token the router measures), the others without delay.
    pub fn sse_after(latency: Duration, frames: Vec<String>) -> Reply {
        Reply::Sse {
            frames: frames
                .into_iter()
                .enumerate()
                .map(|(i, f)| (if i == 0 { latency } else { Duration::ZERO }, f))
                .collect(),
            end: StreamEnd::Close,
        }
    }

    /// SSE frames ending normally, frame `i` of `n` sent after `delay(i, n)`.
    pub fn sse_paced(frames: Vec<String>, delay: impl Fn(usize, usize) -> Duration) -> Reply {
        let n = frames.len();
        Reply::Sse {
            frames: frames
                .into_iter()
                .enumerate()
                .map(|(i, f)| (delay(i, n), f))
                .collect(),
            end: StreamEnd::Close,
        }
    }

    pub fn sse_then(frames: Vec<String>, end: StreamEnd) -> Reply {
        Reply::Sse {
            frames: frames.into_iter().map(|f| (Duration::ZERO, f)).collect(),
            end,
        }
    }
}

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub raw_body: Bytes,
    /// The body parsed as JSON, when it is JSON.
    pub body: Option<Value>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    pub fn json(&self) -> &Value {
        self.body
            .as_ref()
            .unwrap_or_else(|| panic!("upstream request body is not JSON: {:?}", self.raw_body))
    }
}

struct Inner {
    queue: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
    /// Default replies by the `model` field of the request body (the upstream model).
    by_model: Mutex<HashMap<String, Reply>>,
    requests: Mutex<Vec<Recorded>>,
    /// Responses whose handler or body was dropped before it finished on its own.
    cancelled: AtomicUsize,
    /// Responses that finished on their own.
    completed: AtomicUsize,
}

/// Lives as long as one response is being produced; counts how that ended.
struct Guard {
    inner: Arc<Inner>,
    completed: AtomicBool,
}

impl Guard {
    fn complete(&self) {
        self.completed.store(true, Ordering::SeqCst);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.completed.load(Ordering::SeqCst) {
            self.inner.completed.fetch_add(1, Ordering::SeqCst);
        } else {
            self.inner.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

pub struct FakeUpstream {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeUpstream {
    pub async fn start() -> FakeUpstream {
        let inner = Arc::new(Inner {
            queue: Mutex::new(VecDeque::new()),
            default: Mutex::new(Reply::error(
                500,
                json!({"error": {"message": "fake upstream: no reply scripted", "type": "server_error"}}),
            )),
            by_model: Mutex::new(HashMap::new()),
            requests: Mutex::new(Vec::new()),
            cancelled: AtomicUsize::new(0),
            completed: AtomicUsize::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake upstream");
        let addr = listener.local_addr().expect("fake upstream addr");
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            // No Nagle: a test's latencies must be its own, not a 40 ms delayed-ACK stall.
            let listener = axum::serve::ListenerExt::tap_io(listener, |s| {
                let _ = s.set_nodelay(true);
            });
            let _ = axum::serve(listener, app).await;
        });
        FakeUpstream { addr, inner, task }
    }

    /// `http://127.0.0.1:PORT/v1`, the `base_url` for either adapter.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn push(&self, r: Reply) -> &Self {
        self.inner.queue.lock().expect("lock").push_back(r);
        self
    }

    pub fn set_default(&self, r: Reply) {
        *self.inner.default.lock().expect("lock") = r;
    }

    /// The reply for requests whose body asks for upstream model `model`, when the queue is
    /// empty (one fake serving several endpoints of the same provider).
    pub fn set_model_default(&self, model: &str, r: Reply) {
        self.inner
            .by_model
            .lock()
            .expect("lock")
            .insert(model.to_owned(), r);
    }

    /// Requests received for upstream model `model`.
    pub fn request_count_for(&self, model: &str) -> usize {
        self.inner
            .requests
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| {
                r.body
                    .as_ref()
                    .and_then(|b| b.get("model"))
                    .and_then(Value::as_str)
                    == Some(model)
            })
            .count()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.requests.lock().expect("lock").clone()
    }

    pub fn request_count(&self) -> usize {
        self.inner.requests.lock().expect("lock").len()
    }

    /// The only request received; fails the test if there were none or several.
    pub fn only_request(&self) -> Recorded {
        let reqs = self.requests();
        assert_eq!(
            reqs.len(),
            1,
            "expected exactly one upstream request, got {}: {:?}",
            reqs.len(),
            reqs.iter().map(|r| &r.path).collect::<Vec<_>>()
        );
        reqs.into_iter().next().expect("one request")
    }

    pub fn cancelled(&self) -> usize {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    pub fn completed(&self) -> usize {
        self.inner.completed.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until at least `n` responses were cut short by the other side.
    pub async fn wait_cancelled(&self, n: usize, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.cancelled() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.cancelled() >= n
    }

    /// Waits (bounded) until at least `n` requests have arrived.
    pub async fn wait_requests(&self, n: usize, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.request_count() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.request_count() >= n
    }
}

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let raw_body = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let parsed: Option<Value> = serde_json::from_slice(&raw_body).ok();
    let model = parsed
        .as_ref()
        .and_then(|b| b.get("model"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    inner.requests.lock().expect("lock").push(Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.clone(),
        raw_body,
        body: parsed,
    });
    let reply = {
        let next = inner.queue.lock().expect("lock").pop_front();
        let for_model = || {
            let m = model.as_deref()?;
            inner.by_model.lock().expect("lock").get(m).cloned()
        };
        next.or_else(for_model)
            .unwrap_or_else(|| inner.default.lock().expect("lock").clone())
    };
    let guard = Guard {
        inner: inner.clone(),
        completed: AtomicBool::new(false),
    };
    let reply = match reply {
        Reply::Delayed(d, r) => {
            tokio::time::sleep(d).await;
            *r
        }
        r => r,
    };
    // Like a real OpenAI-compatible server, a scripted chat completion is sent as a stream
    // when the request asked for one (Relais streams non-streaming client requests too).
    let wants_stream = inner
        .requests
        .lock()
        .expect("lock")
        .last()
        .and_then(|r| r.body.as_ref())
        .and_then(|b| b.get("stream"))
        .and_then(Value::as_bool)
        == Some(true);
    let reply = match reply {
        Reply::Json {
            status: 200,
            body,
            headers,
        } if wants_stream && body.get("choices").is_some() => {
            let _ = headers;
            Reply::sse(openai::completion_as_stream(&body))
        }
        r => r,
    };
    match reply {
        Reply::Json {
            status,
            body,
            headers,
        } => {
            guard.complete();
            respond(
                status,
                "application/json",
                Body::from(body.to_string()),
                &headers,
            )
        }
        Reply::Raw {
            status,
            content_type,
            body,
            headers,
        } => {
            guard.complete();
            respond(status, &content_type, Body::from(body), &headers)
        }
        Reply::Delayed(..) => {
            guard.complete();
            respond(
                500,
                "text/plain",
                Body::from("fake upstream: nested Delayed"),
                &[],
            )
        }
        Reply::Hang => {
            let _guard = guard;
            std::future::pending::<()>().await;
            unreachable!()
        }
        Reply::TrickleJson(every) => {
            let s = futures_util::stream::unfold(guard, move |g| async move {
                tokio::time::sleep(every).await;
                Some((Ok::<_, std::io::Error>(Bytes::from_static(b" ")), g))
            });
            respond(200, "application/json", Body::from_stream(s), &[])
        }
        Reply::Sse { frames, end } => {
            let frames: VecDeque<(Duration, String)> = frames.into();
            let s = futures_util::stream::unfold(
                (frames, guard, end, false),
                |(mut frames, guard, end, finished)| async move {
                    if finished {
                        return None;
                    }
                    if let Some((delay, frame)) = frames.pop_front() {
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        return Some((Ok(Bytes::from(frame)), (frames, guard, end, false)));
                    }
                    match end {
                        StreamEnd::Close => {
                            guard.complete();
                            None
                        }
                        StreamEnd::Abort => {
                            // Let what was written reach the peer before the cut.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            guard.complete();
                            Some((
                                Err(std::io::Error::other("fake upstream: connection cut")),
                                (frames, guard, end, true),
                            ))
                        }
                        StreamEnd::Hang => {
                            std::future::pending::<()>().await;
                            None
                        }
                        StreamEnd::Trickle(every) => {
                            tokio::time::sleep(every).await;
                            Some((
                                Ok(Bytes::from_static(b": keep-alive\n\n")),
                                (frames, guard, end, false),
                            ))
                        }
                    }
                },
            );
            respond(200, "text/event-stream", Body::from_stream(s), &[])
        }
    }
}

fn respond(status: u16, content_type: &str, body: Body, headers: &[(String, String)]) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status).expect("valid status");
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_str(content_type).expect("content type"),
    );
    for (k, v) in headers {
        h.insert(
            HeaderName::from_bytes(k.as_bytes()).expect("header name"),
            HeaderValue::from_str(v).expect("header value"),
        );
    }
    resp
}

pub mod openai;

pub mod anthropic;
