//! Fake OpenAI-compatible upstream for benchmarks: canned chat completions, as fast as
//! hyper can serve them on one thread.
//!
//! `POST .../chat/completions` answers according to the request body:
//! - `"stream": true` absent and the model name contains `up-paced`: a canned JSON
//!   completion (with usage) when a paced stream's last content chunk would come (after
//!   `--pace-ms` × `--chunks`): the head is held until then, as an OpenAI-compatible server
//!   sends a whole answer's head only once the generation is done.
//! - `"stream": true` absent otherwise: the same completion, at once.
//! - `"stream": true` and the model name contains `up-paced`: an SSE stream whose events
//!   come `--pace-ms` apart (role chunk at once, then `--chunks` content chunks, then
//!   finish + usage + `[DONE]`), for time-to-first-token measurements.
//! - `"stream": true` and the model name contains `up-hold`: role and first content chunk at
//!   once, then one chunk every `--hold-ms` for `--hold-chunks` chunks: streams that stay
//!   open, for the memory-per-stream test.
//! - otherwise (`up-instant` or any other model): the whole `--chunks`-chunk stream at once.
//!
//! Slow requests (`--slow-share F --slow-ms N --slow-seed S`): a deterministic share `F` of
//! the `up-paced` requests (streams and JSON) answer late: their head is held `N` ms more.
//! Request `i` (counted from 0 in arrival order) is slow when a hash of `S` and `i` falls
//! below `F`, so a run of many requests has that share whatever the concurrency.
//!
//! `GET /health` answers `ok`; `GET /stats` answers counters as JSON: `requests`,
//! `streams`, `active_streams`, `bad_requests`, `slow` (paced requests held late) and
//! `cancelled` (requests whose client went away before the answer's end: a stream dropped
//! before its last frame, a held head dropped before it was sent).
//! Content tokens are `w1 ` .. and the last one is `bench-end`, so a client can check that
//! a complete answer went through.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use relais_bench::Args;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex};
use std::task::Waker;

const USAGE: &str = "bench-upstream [--listen 127.0.0.1:0] [--port-file PATH] [--threads 1] \
[--chunks 20] [--pace-ms 10] [--hold-ms 1000] [--hold-chunks 120] \
[--slow-share 0] [--slow-ms 2000] [--slow-seed 1]";

#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    streams: AtomicU64,
    active_streams: AtomicU64,
    bad_requests: AtomicU64,
    slow: AtomicU64,
    cancelled: AtomicU64,
    /// `up-paced` requests seen (the index that decides which are slow).
    paced_seen: AtomicU64,
}

struct Canned {
    json: Bytes,
    instant: Arc<Vec<Bytes>>,
    paced: Arc<Vec<Bytes>>,
    hold: Arc<Vec<Bytes>>,
    pace: Duration,
    hold_pace: Duration,
    chunks: u32,
    slow_share: f64,
    slow_hold: Duration,
    slow_seed: u64,
    stats: Stats,
    pacer: Arc<Pacer>,
}

fn chunk(model: &str, delta: &str, finish: &str) -> String {
    format!(
        "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\
\"model\":\"{model}\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
    )
}

fn token(i: usize, n: usize) -> String {
    if i == n {
        "bench-end".to_string()
    } else {
        format!("w{i} ")
    }
}

/// Frames: [role], content 1..=n, [finish + usage + DONE].
fn stream_frames(model: &str, n: usize) -> Arc<Vec<Bytes>> {
    let mut v = vec![Bytes::from(chunk(model, r#"{"role":"assistant","content":""}"#, "null"))];
    for i in 1..=n {
        let d = format!("{{\"content\":\"{}\"}}", token(i, n));
        v.push(Bytes::from(chunk(model, &d, "null")));
    }
    let mut end = chunk(model, "{}", "\"stop\"");
    end.push_str(&format!(
        "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\
\"model\":\"{model}\",\"choices\":[],\"usage\":{{\"prompt_tokens\":9,\"completion_tokens\":{n},\"total_tokens\":{}}}}}\n\n",
        n + 9
    ));
    end.push_str("data: [DONE]\n\n");
    v.push(Bytes::from(end));
    Arc::new(v)
}

fn json_body(n: usize) -> Bytes {
    let text: String = (1..=n).map(|i| token(i, n)).collect();
    Bytes::from(format!(
        "{{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion\",\"created\":1700000000,\
\"model\":\"bench-upstream\",\"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\
\"content\":\"{text}\"}},\"finish_reason\":\"stop\"}}],\"usage\":{{\"prompt_tokens\":9,\
\"completion_tokens\":{n},\"total_tokens\":{}}}}}",
        n + 9
    ))
}

/// Wakes paced bodies at their deadlines from a dedicated thread sleeping on a condvar:
/// ~0.1 ms precision, where tokio's timer wheel rounds every deadline up to the next
/// millisecond (that jitter would swamp sub-millisecond overheads).
struct Pacer {
    heap: Mutex<BinaryHeap<Reverse<Due>>>,
    cv: Condvar,
}

struct Due(std::time::Instant, u64, Waker);

impl PartialEq for Due {
    fn eq(&self, o: &Self) -> bool {
        (self.0, self.1) == (o.0, o.1)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Due {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(o.0, o.1))
    }
}

static SEQ: AtomicU64 = AtomicU64::new(0);

impl Pacer {
    fn start() -> Arc<Pacer> {
        let p = Arc::new(Pacer { heap: Mutex::new(BinaryHeap::new()), cv: Condvar::new() });
        let q = p.clone();
        std::thread::Builder::new()
            .name("pacer".into())
            .spawn(move || q.run())
            .unwrap_or_else(|e| {
                eprintln!("bench-upstream: cannot start the pacer thread: {e}");
                std::process::exit(2)
            });
        p
    }

    fn wake_at(&self, at: std::time::Instant, w: Waker) {
        let seq = SEQ.fetch_add(1, Relaxed);
        let mut h = self.heap.lock().unwrap_or_else(|e| e.into_inner());
        let earliest = h.peek().map(|Reverse(d)| d.0);
        h.push(Reverse(Due(at, seq, w)));
        if earliest.is_none_or(|e| at < e) {
            self.cv.notify_one();
        }
    }

    fn run(&self) {
        let mut due = Vec::new();
        let mut h = self.heap.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let now = std::time::Instant::now();
            while h.peek().is_some_and(|Reverse(d)| d.0 <= now) {
                if let Some(Reverse(d)) = h.pop() {
                    due.push(d.2);
                }
            }
            if !due.is_empty() {
                drop(h);
                for w in due.drain(..) {
                    w.wake();
                }
                h = self.heap.lock().unwrap_or_else(|e| e.into_inner());
                continue;
            }
            h = match h.peek().map(|Reverse(d)| d.0) {
                None => self.cv.wait(h).unwrap_or_else(|e| e.into_inner()),
                Some(at) => {
                    self.cv.wait_timeout(h, at - now).unwrap_or_else(|e| e.into_inner()).0
                }
            };
        }
    }
}

/// A future ready at `at`, woken by the pacer (see `Pacer`).
struct Until {
    at: std::time::Instant,
    pacer: Arc<Pacer>,
}

impl std::future::Future for Until {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if std::time::Instant::now() >= self.at {
            return Poll::Ready(());
        }
        self.pacer.wake_at(self.at, cx.waker().clone());
        Poll::Pending
    }
}

/// Counts a request as cancelled when dropped before `done`: hyper drops a handler's
/// future when its client closes the connection (it watches for EOF mid-message).
struct HeldHead<'a> {
    stats: &'a Stats,
    done: bool,
}

impl Drop for HeldHead<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.stats.cancelled.fetch_add(1, Relaxed);
        }
    }
}

/// splitmix64: a well-mixed hash of the seed and a request index.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// An SSE body that releases frame k (k >= 1) at `start + first + (k-1)*pace`; frame 0 at once.
struct SseBody {
    frames: Arc<Vec<Bytes>>,
    idx: usize,
    start: std::time::Instant,
    first: Duration,
    pace: Duration,
    canned: Arc<Canned>,
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.idx >= this.frames.len() {
            return Poll::Ready(None);
        }
        if this.idx >= 1 && !(this.first.is_zero() && this.pace.is_zero()) {
            let at = this.start + this.first + this.pace * (this.idx as u32 - 1);
            if at > std::time::Instant::now() {
                this.canned.pacer.wake_at(at, cx.waker().clone());
                return Poll::Pending;
            }
        }
        let f = this.frames[this.idx].clone();
        this.idx += 1;
        Poll::Ready(Some(Ok(Frame::data(f))))
    }

    fn is_end_stream(&self) -> bool {
        self.idx >= self.frames.len()
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        self.canned.stats.active_streams.fetch_sub(1, Relaxed);
        if self.idx < self.frames.len() {
            self.canned.stats.cancelled.fetch_add(1, Relaxed);
        }
    }
}

type RespBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

fn is_stream(body: &[u8]) -> bool {
    let Some(i) = memchr::memmem::find(body, b"\"stream\"") else {
        return false;
    };
    let rest = &body[i + 8..];
    let rest: Vec<u8> = rest
        .iter()
        .copied()
        .skip_while(|c| c.is_ascii_whitespace() || *c == b':')
        .take(4)
        .collect();
    rest == b"true"
}

fn simple(status: StatusCode, ctype: &'static str, body: Bytes) -> Response<RespBody> {
    let mut r = Response::new(Full::new(body).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(ctype));
    r
}

async fn handle(req: Request<Incoming>, c: Arc<Canned>) -> Result<Response<RespBody>, Infallible> {
    let path = req.uri().path();
    if req.method() == hyper::Method::GET {
        return Ok(match path {
            "/health" => simple(StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
            "/stats" => {
                let s = &c.stats;
                let j = format!(
                    "{{\"requests\":{},\"streams\":{},\"active_streams\":{},\"bad_requests\":{},\
\"slow\":{},\"cancelled\":{}}}\n",
                    s.requests.load(Relaxed),
                    s.streams.load(Relaxed),
                    s.active_streams.load(Relaxed),
                    s.bad_requests.load(Relaxed),
                    s.slow.load(Relaxed),
                    s.cancelled.load(Relaxed)
                );
                simple(StatusCode::OK, "application/json", Bytes::from(j))
            }
            _ => simple(StatusCode::NOT_FOUND, "text/plain", Bytes::from_static(b"not found\n")),
        });
    }
    if req.method() != hyper::Method::POST || !path.ends_with("/chat/completions") {
        c.stats.bad_requests.fetch_add(1, Relaxed);
        return Ok(simple(StatusCode::NOT_FOUND, "text/plain", Bytes::from_static(b"not found\n")));
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            c.stats.bad_requests.fetch_add(1, Relaxed);
            return Ok(simple(StatusCode::BAD_REQUEST, "text/plain", Bytes::new()));
        }
    };
    c.stats.requests.fetch_add(1, Relaxed);
    let stream = is_stream(&body);
    let paced = memchr::memmem::find(&body, b"up-paced").is_some();
    // Held heads: a slow paced request's (`--slow-ms`), and a paced JSON answer's (until
    // its generation would be done). Counted as cancelled if the client goes first.
    let mut hold = Duration::ZERO;
    if paced {
        let i = c.stats.paced_seen.fetch_add(1, Relaxed);
        // A uniform draw in [0, 1) from the top 53 bits of the hash.
        let u = (mix(c.slow_seed ^ mix(i)) >> 11) as f64 / (1u64 << 53) as f64;
        if u < c.slow_share {
            c.stats.slow.fetch_add(1, Relaxed);
            hold += c.slow_hold;
        }
        if !stream {
            hold += c.pace * c.chunks;
        }
    }
    if !hold.is_zero() {
        let mut guard = HeldHead { stats: &c.stats, done: false };
        Until { at: std::time::Instant::now() + hold, pacer: c.pacer.clone() }.await;
        guard.done = true;
    }
    if !stream {
        return Ok(simple(StatusCode::OK, "application/json", c.json.clone()));
    }
    c.stats.streams.fetch_add(1, Relaxed);
    c.stats.active_streams.fetch_add(1, Relaxed);
    let (frames, first, pace) = if paced {
        (c.paced.clone(), c.pace, c.pace)
    } else if memchr::memmem::find(&body, b"up-hold").is_some() {
        (c.hold.clone(), Duration::ZERO, c.hold_pace)
    } else {
        (c.instant.clone(), Duration::ZERO, Duration::ZERO)
    };
    let sse = SseBody {
        frames,
        idx: 0,
        start: std::time::Instant::now(),
        first,
        pace,
        canned: c.clone(),
    };
    let mut r = Response::new(sse.boxed_unsync());
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(hyper::header::CACHE_CONTROL, hyper::header::HeaderValue::from_static("no-cache"));
    Ok(r)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("bench-upstream: {e}\nusage: {USAGE}");
        std::process::exit(2);
    }
}

fn run() -> Result<(), String> {
    let a = Args::parse(&["help"])?;
    if a.flag("help") {
        println!("{USAGE}");
        return Ok(());
    }
    let listen: SocketAddr = a
        .str("listen")
        .unwrap_or("127.0.0.1:0")
        .parse()
        .map_err(|e| format!("--listen: {e}"))?;
    let threads: usize = a.num("threads", 1)?;
    let n: usize = a.num("chunks", 20)?;
    let hold_n: usize = a.num("hold-chunks", 120)?;
    if n < 1 || hold_n < 1 {
        return Err("--chunks and --hold-chunks must be >= 1".into());
    }
    let slow_share: f64 = a.num("slow-share", 0.0)?;
    if !(0.0..=1.0).contains(&slow_share) {
        return Err("--slow-share must be within 0..=1".into());
    }
    let canned = Arc::new(Canned {
        json: json_body(n),
        instant: stream_frames("bench-upstream", n),
        paced: stream_frames("bench-upstream", n),
        hold: stream_frames("bench-upstream", hold_n),
        pace: a.ms("pace-ms", 10)?,
        hold_pace: a.ms("hold-ms", 1000)?,
        chunks: u32::try_from(n).map_err(|_| "--chunks: too many")?,
        slow_share,
        slow_hold: a.ms("slow-ms", 2000)?,
        slow_seed: a.num("slow-seed", 1)?,
        stats: Stats::default(),
        pacer: Pacer::start(),
    });
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
    }
    .map_err(|e| e.to_string())?;
    let port_file = a.str("port-file").map(str::to_string);
    rt.block_on(async move {
        let l = tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("bind {listen}: {e}"))?;
        let addr = l.local_addr().map_err(|e| e.to_string())?;
        if let Some(p) = port_file {
            std::fs::write(&p, format!("{}\n", addr.port())).map_err(|e| format!("{p}: {e}"))?;
        }
        println!("bench-upstream listening on {addr}");
        loop {
            let (sock, _) = match l.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = sock.set_nodelay(true);
            let c = canned.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(req, c.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(sock), svc)
                    .await;
            });
        }
    })
}
