//! Load generator for the Relais benchmarks. Single-threaded (one core) on purpose, so it
//! can be pinned and its cost is the same for the direct and the gateway runs.
//!
//! `bench-load run`: closed loop. `--concurrency` keep-alive HTTP/1.1 connections, each
//! sending the same POST back to back for `--warmup-ms` + `--duration-ms`; requests that
//! complete inside the measured window count. Every response is checked: status 200, the
//! body contains `--expect` (default `bench-end`, the upstream's last token) and, for
//! streams, the format's end marker (`message_stop` for anthropic, `[DONE]` for openai).
//! For streams it also measures time to first token: the first `content_block_delta`
//! (anthropic) or the first chunk with a non-empty `"content"` (openai).
//! With `--watch NAME=PID` it reads each process's CPU time (utime+stime) at the window's
//! start and end, and its peak RSS over the window (VmHWM after a clear_refs reset, plus
//! VmRSS sampled every 20 ms).
//!
//! `bench-load hold`: opens `--streams` concurrent streams, waits until each has received
//! its first token, then samples the watched processes' RSS for `--hold-ms`, then closes
//! them all.
//!
//! Output: one JSON object on stdout.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use relais_bench::{cpu_times, pct, proc_cpu_secs, proc_sched_ns, proc_status_kb, reset_peak_rss, Args};
use serde_json::{json, Value};
use tokio::time::Instant;

const USAGE: &str = "bench-load run|hold --url URL (--body JSON | --body-file PATH) \
[--header 'K: V']... [--format anthropic|openai] [--stream] [--watch NAME=PID]... \
run: [--concurrency 1] [--duration-ms 5000] [--warmup-ms 500] [--timeout-ms 30000] \
[--max-requests 5000000] [--expect bench-end]; \
hold: [--streams 1000] [--connect-parallel 200] [--ready-timeout-ms 60000] [--hold-ms 2000]";

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Anthropic,
    OpenAi,
}

struct Target {
    host: String,
    addr: String,
    path: String,
    headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    body: Bytes,
    format: Format,
    stream: bool,
    expect: Vec<u8>,
}

fn parse_target(a: &Args) -> Result<Target, String> {
    let url = a.str("url").ok_or("--url is required")?;
    let rest = url.strip_prefix("http://").ok_or("--url must start with http://")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if hostport.contains(':') { hostport.to_string() } else { format!("{hostport}:80") };
    let body = match (a.str("body"), a.str("body-file")) {
        (Some(b), _) => Bytes::from(b.to_string()),
        (None, Some(f)) => Bytes::from(std::fs::read(f).map_err(|e| format!("{f}: {e}"))?),
        (None, None) => return Err("--body or --body-file is required".into()),
    };
    let mut headers = vec![(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    )];
    for h in a.all("header") {
        let (k, v) = h.split_once(':').ok_or_else(|| format!("bad --header {h:?}"))?;
        headers.push((
            k.trim().parse().map_err(|_| format!("bad header name {k:?}"))?,
            v.trim().parse().map_err(|_| format!("bad header value {v:?}"))?,
        ));
    }
    let format = match a.str("format").unwrap_or("anthropic") {
        "anthropic" => Format::Anthropic,
        "openai" => Format::OpenAi,
        f => return Err(format!("unknown --format {f}")),
    };
    Ok(Target {
        host: hostport.to_string(),
        addr,
        path: path.to_string(),
        headers,
        body,
        format,
        stream: a.flag("stream"),
        expect: a.str("expect").unwrap_or("bench-end").as_bytes().to_vec(),
    })
}

fn parse_watch(a: &Args) -> Result<Vec<(String, u32)>, String> {
    a.all("watch")
        .iter()
        .map(|w| {
            let (n, p) = w.split_once('=').ok_or_else(|| format!("bad --watch {w:?}"))?;
            Ok((n.to_string(), p.parse().map_err(|_| format!("bad pid in {w:?}"))?))
        })
        .collect()
}

/// Position just past the first token in `buf[from..]`, if any.
fn first_token(fmt: Format, buf: &[u8], from: usize) -> bool {
    let hay = &buf[from.min(buf.len())..];
    match fmt {
        Format::Anthropic => memchr::memmem::find(hay, b"content_block_delta").is_some(),
        Format::OpenAi => {
            // `"content"` <ws> `:` <ws> `"` <not `"`>
            let mut off = 0;
            while let Some(i) = memchr::memmem::find(&hay[off..], b"\"content\"") {
                let mut j = off + i + 9;
                while j < hay.len() && (hay[j] == b' ' || hay[j] == b':') {
                    j += 1;
                }
                if j + 1 < hay.len() && hay[j] == b'"' && hay[j + 1] != b'"' {
                    return true;
                }
                off += i + 9;
            }
            false
        }
    }
}

fn end_marker(fmt: Format) -> &'static [u8] {
    match fmt {
        Format::Anthropic => b"message_stop",
        Format::OpenAi => b"[DONE]",
    }
}

struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
}

async fn connect(t: &Target) -> Result<Conn, String> {
    let s = tokio::net::TcpStream::connect(&t.addr).await.map_err(|e| format!("connect {}: {e}", t.addr))?;
    let _ = s.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(s)).await.map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Conn { sender })
}

fn build_req(t: &Target) -> Request<Full<Bytes>> {
    let mut r = Request::new(Full::new(t.body.clone()));
    *r.method_mut() = hyper::Method::POST;
    *r.uri_mut() = t.path.parse().unwrap_or_default();
    let h = r.headers_mut();
    if let Ok(v) = t.host.parse() {
        h.insert(hyper::header::HOST, v);
    }
    for (k, v) in &t.headers {
        h.insert(k.clone(), v.clone());
    }
    r
}

struct Outcome {
    ttft_ns: Option<u64>,
}

/// One request on an open connection; reads and checks the whole response.
async fn one(t: &Target, c: &mut Conn, buf: &mut Vec<u8>, start: Instant) -> Result<Outcome, String> {
    c.sender.ready().await.map_err(|e| format!("not ready: {e}"))?;
    let resp = c.sender.send_request(build_req(t)).await.map_err(|e| format!("send: {e}"))?;
    let status = resp.status();
    let mut body = resp.into_body();
    buf.clear();
    let mut ttft = None;
    while let Some(f) = body.frame().await {
        let f = f.map_err(|e| format!("body: {e}"))?;
        if let Ok(d) = f.into_data() {
            let from = buf.len().saturating_sub(24);
            buf.extend_from_slice(&d);
            if t.stream && ttft.is_none() && first_token(t.format, buf, from) {
                ttft = Some(start.elapsed().as_nanos() as u64);
            }
        }
        if buf.len() > 64 << 20 {
            return Err("response over 64 MiB".into());
        }
    }
    if status != StatusCode::OK {
        let snippet = String::from_utf8_lossy(&buf[..buf.len().min(200)]).to_string();
        return Err(format!("status {status}: {snippet}"));
    }
    if memchr::memmem::find(buf, &t.expect).is_none() {
        let snippet = String::from_utf8_lossy(&buf[..buf.len().min(200)]).to_string();
        return Err(format!("body lacks {:?}: {snippet}", String::from_utf8_lossy(&t.expect)));
    }
    if t.stream {
        if memchr::memmem::find(buf, end_marker(t.format)).is_none() {
            return Err("stream lacks its end marker".into());
        }
        if ttft.is_none() {
            return Err("stream had no content token".into());
        }
    }
    Ok(Outcome { ttft_ns: ttft })
}

#[derive(Default)]
struct Tally {
    lat: Vec<u64>,
    ttft: Vec<u64>,
    errors: u64,
    error_samples: Vec<String>,
    total_done: u64,
}

impl Tally {
    fn error(&mut self, e: String) {
        self.errors += 1;
        if self.error_samples.len() < 5 {
            self.error_samples.push(e);
        }
    }
}

fn cpu_snapshot(watch: &[(String, u32)]) -> Vec<(Option<f64>, Option<u64>)> {
    watch.iter().map(|(_, p)| (proc_cpu_secs(*p), proc_sched_ns(*p))).collect()
}

fn stats(v: &mut [u64]) -> Value {
    v.sort_unstable();
    let us = |ns: u64| (ns as f64) / 1000.0;
    let mean = if v.is_empty() { 0.0 } else { v.iter().map(|x| *x as f64).sum::<f64>() / v.len() as f64 / 1000.0 };
    json!({
        "n": v.len(),
        "p50_us": us(pct(v, 50.0)),
        "p90_us": us(pct(v, 90.0)),
        "p95_us": us(pct(v, 95.0)),
        "p99_us": us(pct(v, 99.0)),
        "p999_us": us(pct(v, 99.9)),
        "max_us": us(v.last().copied().unwrap_or(0)),
        "mean_us": mean,
    })
}

async fn cmd_run(a: &Args) -> Result<Value, String> {
    let t = Arc::new(parse_target(a)?);
    let watch = parse_watch(a)?;
    let conc: usize = a.num("concurrency", 1)?;
    let duration = a.ms("duration-ms", 5000)?;
    let warmup = a.ms("warmup-ms", 500)?;
    let timeout = a.ms("timeout-ms", 30000)?;
    let max_requests: u64 = a.num("max-requests", 5_000_000)?;
    if conc == 0 || conc > 20000 {
        return Err("--concurrency must be 1..=20000".into());
    }
    let t0 = Instant::now();
    let m0 = t0 + warmup;
    let m1 = m0 + duration;
    let stop = Arc::new(AtomicBool::new(false));
    let issued = Arc::new(AtomicU64::new(0));

    let sampler = {
        let watch = watch.clone();
        // Set once every worker is done (all `--max-requests` sent): the window ends then.
        let done = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(m0).await;
            let hwm_reset: Vec<bool> = watch.iter().map(|(_, p)| reset_peak_rss(*p)).collect();
            let cpu0 = cpu_snapshot(&watch);
            let self_pid = std::process::id();
            let self0 = (proc_cpu_secs(self_pid), proc_sched_ns(self_pid));
            let cores0 = cpu_times();
            let mut rss_max = vec![0u64; watch.len()];
            let mut iv = tokio::time::interval(Duration::from_millis(20));
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(m1) => break,
                    _ = iv.tick() => {
                        if done.load(Relaxed) {
                            break;
                        }
                        for (i, (_, p)) in watch.iter().enumerate() {
                            rss_max[i] = rss_max[i].max(proc_status_kb(*p, "VmRSS").unwrap_or(0));
                        }
                    }
                }
            }
            let cpu1 = cpu_snapshot(&watch);
            let cores1 = cpu_times();
            let self1 = (proc_cpu_secs(self_pid), proc_sched_ns(self_pid));
            let wall = (Instant::now() - m0).as_secs_f64();
            let mut out = serde_json::Map::new();
            // Per-core busy and steal fractions over the window: shows which side saturates.
            let mut cores = Vec::new();
            for (i, b1, id1, st1) in &cores1 {
                if let Some((_, b0, id0, st0)) = cores0.iter().find(|c| c.0 == *i) {
                    let tot = (b1 - b0) + (id1 - id0) + (st1 - st0);
                    if tot > 0 {
                        cores.push(json!({"cpu": i, "busy": (b1 - b0) as f64 / tot as f64,
                                          "steal": (st1 - st0) as f64 / tot as f64}));
                    }
                }
            }
            out.insert("_cores".into(), Value::Array(cores));
            let sched_self = match (self0.1, self1.1) {
                (Some(a), Some(b)) if b >= a => Some((b - a) as f64 / 1e9),
                _ => None,
            };
            out.insert("_load".into(), json!({
                "cpu_s": self0.0.zip(self1.0).map(|(a, b)| b - a),
                "sched_cpu_s": sched_self,
            }));
            for (i, (name, p)) in watch.iter().enumerate() {
                let cpu = match (cpu0[i].0, cpu1[i].0) {
                    (Some(a), Some(b)) => Some(b - a),
                    _ => None,
                };
                let sched = match (cpu0[i].1, cpu1[i].1) {
                    (Some(a), Some(b)) if b >= a => Some((b - a) as f64 / 1e9),
                    _ => None,
                };
                let hwm = if hwm_reset[i] { proc_status_kb(*p, "VmHWM") } else { None };
                out.insert(
                    name.clone(),
                    json!({
                        "pid": p,
                        "cpu_s": cpu,
                        "sched_cpu_s": sched,
                        "rss_kb_end": proc_status_kb(*p, "VmRSS"),
                        "rss_kb_peak_sampled": rss_max[i],
                        "rss_kb_peak_hwm": hwm,
                        "threads": proc_status_kb(*p, "Threads"),
                    }),
                );
            }
            (Value::Object(out), wall)
        })
    };

    let mut handles = Vec::with_capacity(conc);
    for _ in 0..conc {
        let t = t.clone();
        let stop = stop.clone();
        let issued = issued.clone();
        handles.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut buf = Vec::with_capacity(16 << 10);
            let mut conn: Option<Conn> = None;
            let mut consecutive_fail = 0u32;
            loop {
                if stop.load(Relaxed) || Instant::now() >= m1 {
                    break;
                }
                if issued.fetch_add(1, Relaxed) >= max_requests {
                    break;
                }
                if conn.as_ref().is_some_and(|c| c.sender.is_closed()) {
                    conn = None; // closed by the server between requests: not an error
                }
                if conn.is_none() {
                    match tokio::time::timeout(timeout, connect(&t)).await {
                        Ok(Ok(c)) => conn = Some(c),
                        Ok(Err(e)) => {
                            tally.error(e);
                            consecutive_fail += 1;
                        }
                        Err(_) => {
                            tally.error("connect timeout".into());
                            consecutive_fail += 1;
                        }
                    }
                    if conn.is_none() {
                        if consecutive_fail > 50 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                }
                let Some(c) = conn.as_mut() else { continue };
                let start = Instant::now();
                let r = tokio::time::timeout(timeout, one(&t, c, &mut buf, start)).await;
                let end = Instant::now();
                tally.total_done += 1;
                match r {
                    Ok(Ok(o)) => {
                        consecutive_fail = 0;
                        if end >= m0 && end <= m1 {
                            tally.lat.push((end - start).as_nanos() as u64);
                            if let Some(x) = o.ttft_ns {
                                tally.ttft.push(x);
                            }
                        }
                    }
                    Ok(Err(e)) => {
                        tally.error(e);
                        conn = None;
                        consecutive_fail += 1;
                    }
                    Err(_) => {
                        tally.error(format!("timeout after {timeout:?}"));
                        conn = None;
                        consecutive_fail += 1;
                    }
                }
                if consecutive_fail > 50 {
                    break;
                }
            }
            tally
        }));
    }
    let mut all = Tally::default();
    for h in handles {
        let tl = h.await.map_err(|e| format!("worker: {e}"))?;
        all.lat.extend(tl.lat);
        all.ttft.extend(tl.ttft);
        all.errors += tl.errors;
        all.total_done += tl.total_done;
        for e in tl.error_samples {
            if all.error_samples.len() < 5 {
                all.error_samples.push(e);
            }
        }
    }
    stop.store(true, Relaxed);
    let (procs, wall) = if Instant::now() >= m0 {
        sampler.await.map_err(|e| format!("sampler: {e}"))?
    } else {
        sampler.abort();
        (json!({}), 0.0)
    };
    let n = all.lat.len();
    Ok(json!({
        "mode": "run",
        "concurrency": conc,
        "stream": t.stream,
        "duration_s": duration.as_secs_f64(),
        "window_s": wall,
        "requests": n,
        "requests_total": all.total_done,
        "rps": if duration.is_zero() { 0.0 } else { n as f64 / duration.as_secs_f64() },
        "errors": all.errors,
        "error_samples": all.error_samples,
        "latency": stats(&mut all.lat),
        "ttft": stats(&mut all.ttft),
        "procs": procs,
    }))
}

async fn cmd_hold(a: &Args) -> Result<Value, String> {
    let mut tt = parse_target(a)?;
    tt.stream = true;
    let t = Arc::new(tt);
    let watch = parse_watch(a)?;
    let n: usize = a.num("streams", 1000)?;
    let par: usize = a.num("connect-parallel", 200)?;
    let ready_timeout = a.ms("ready-timeout-ms", 60000)?;
    let hold = a.ms("hold-ms", 2000)?;
    if n == 0 || n > 100_000 || par == 0 {
        return Err("--streams must be 1..=100000, --connect-parallel >= 1".into());
    }
    let rss = |w: &[(String, u32)]| -> Value {
        let mut m = serde_json::Map::new();
        for (name, p) in w {
            m.insert(name.clone(), json!(proc_status_kb(*p, "VmRSS")));
        }
        Value::Object(m)
    };
    let rss_before = rss(&watch);
    let sem = Arc::new(tokio::sync::Semaphore::new(par));
    let ready = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let ended_early = Arc::new(AtomicU64::new(0));
    let errs: Rc<RefCell<Vec<String>>> = Rc::new(RefCell::new(Vec::new()));
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let (err_tx, mut err_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let t0 = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for _ in 0..n {
        let (t, sem, ready, failed, ended_early, err_tx) =
            (t.clone(), sem.clone(), ready.clone(), failed.clone(), ended_early.clone(), err_tx.clone());
        let mut rel = release_rx.clone();
        handles.push(tokio::spawn(async move {
            let permit = sem.acquire_owned().await;
            let deadline = t0 + ready_timeout;
            let fail = |e: String| {
                failed.fetch_add(1, Relaxed);
                let _ = err_tx.send(e);
            };
            let opened = tokio::time::timeout_at(deadline, async {
                let mut c = connect(&t).await?;
                c.sender.ready().await.map_err(|e| format!("not ready: {e}"))?;
                let resp = c.sender.send_request(build_req(&t)).await.map_err(|e| format!("send: {e}"))?;
                if resp.status() != StatusCode::OK {
                    return Err(format!("status {}", resp.status()));
                }
                let mut body = resp.into_body();
                let mut buf = Vec::new();
                loop {
                    match body.frame().await {
                        None => return Err("stream ended before first token".to_string()),
                        Some(Err(e)) => return Err(format!("body: {e}")),
                        Some(Ok(f)) => {
                            if let Ok(d) = f.into_data() {
                                buf.extend_from_slice(&d);
                                if first_token(t.format, &buf, 0) {
                                    return Ok((c, body));
                                }
                            }
                        }
                    }
                }
            })
            .await;
            drop(permit);
            let (c, mut body) = match opened {
                Ok(Ok(x)) => x,
                Ok(Err(e)) => return fail(e),
                Err(_) => return fail("no first token before --ready-timeout-ms".into()),
            };
            ready.fetch_add(1, Relaxed);
            // Keep reading (the upstream keeps sending) until released.
            loop {
                tokio::select! {
                    _ = rel.wait_for(|r| *r) => break,
                    f = body.frame() => match f {
                        Some(Ok(_)) => {}
                        _ => { ended_early.fetch_add(1, Relaxed); break; }
                    }
                }
            }
            drop(body);
            drop(c);
        }));
    }
    drop(err_tx);
    // Wait until every stream is open (or failed), bounded.
    let all_in = loop {
        let done = ready.load(Relaxed) + failed.load(Relaxed);
        while let Ok(e) = err_rx.try_recv() {
            if errs.borrow().len() < 5 {
                errs.borrow_mut().push(e);
            }
        }
        if done >= n as u64 {
            break true;
        }
        if Instant::now() > t0 + ready_timeout + Duration::from_secs(1) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let open_s = (Instant::now() - t0).as_secs_f64();
    tokio::time::sleep(Duration::from_millis(300)).await; // let buffers settle
    let rss_ready = rss(&watch);
    let mut rss_max = vec![0u64; watch.len()];
    let h_end = Instant::now() + hold;
    while Instant::now() < h_end {
        for (i, (_, p)) in watch.iter().enumerate() {
            rss_max[i] = rss_max[i].max(proc_status_kb(*p, "VmRSS").unwrap_or(0));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_end = rss(&watch);
    let still_open = ready.load(Relaxed) - ended_early.load(Relaxed);
    let _ = release_tx.send(true);
    let closing = tokio::time::timeout(Duration::from_secs(30), async {
        for h in handles {
            let _ = h.await;
        }
    })
    .await;
    while let Ok(e) = err_rx.try_recv() {
        if errs.borrow().len() < 5 {
            errs.borrow_mut().push(e);
        }
    }
    let mut max_map = serde_json::Map::new();
    for (i, (name, _)) in watch.iter().enumerate() {
        max_map.insert(name.clone(), json!(rss_max[i]));
    }
    let errors = failed.load(Relaxed) + ended_early.load(Relaxed);
    let error_samples = errs.borrow().clone();
    Ok(json!({
        "mode": "hold",
        "streams": n,
        "ready": ready.load(Relaxed),
        "still_open_at_end": still_open,
        "failed": failed.load(Relaxed),
        "ended_early": ended_early.load(Relaxed),
        "errors": errors,
        "error_samples": error_samples,
        "all_opened": all_in,
        "open_s": open_s,
        "closed_cleanly": closing.is_ok(),
        "rss_kb_before": rss_before,
        "rss_kb_ready": rss_ready,
        "rss_kb_max": Value::Object(max_map),
        "rss_kb_end": rss_end,
    }))
}

fn main() {
    let cmd = std::env::args().nth(1).unwrap_or_default();
    if cmd == "--help" || cmd == "help" || cmd.is_empty() {
        println!("{USAGE}");
        return;
    }
    let a = match Args::parse_from(std::env::args().skip(2), &["stream", "help"]) {
        Ok(a) => a,
        Err(e) => die(&e),
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => die(&e.to_string()),
    };
    let r = rt.block_on(async {
        match cmd.as_str() {
            "run" => cmd_run(&a).await,
            "hold" => cmd_hold(&a).await,
            _ => Err(format!("unknown command {cmd:?}")),
        }
    });
    match r {
        Ok(v) => println!("{v}"),
        Err(e) => die(&e),
    }
}

fn die(e: &str) -> ! {
    eprintln!("bench-load: {e}\nusage: {USAGE}");
    std::process::exit(2);
}
