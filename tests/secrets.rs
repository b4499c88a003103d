//! Keys never leak: not the client's key, not a wrong key a client tried, not the
//! provider key (even when a provider echoes it back in an error), neither in response
//! bodies nor in the logs of the real binary at the most verbose level.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fake_upstream::openai;
use common::*;
use serde_json::json;

const WRONG_KEY: &str = "sk-relais-WRONG-key-5a5a5a5a5a";

/// Upstream replies that quote the provider key back, as some providers do.
fn echoing_replies() -> Vec<Reply> {
    let msg = format!("Incorrect API key provided: {UPSTREAM_KEY}");
    vec![
        Reply::error(
            401,
            json!({"error": {"message": msg, "type": "invalid_request_error"}}),
        ),
        Reply::error(403, json!({"error": {"message": msg}})),
        Reply::error(
            400,
            json!({"error": {"message": msg, "type": "invalid_request_error"}}),
        ),
        Reply::error(422, json!({"detail": msg})),
        Reply::error(500, json!({"error": {"message": msg}})),
        Reply::raw(502, "text/plain", msg.as_bytes()),
        Reply::raw(
            200,
            "application/json",
            format!("{{\"oops\": \"{msg}").as_bytes(),
        ),
        Reply::sse(vec![openai::frame(&json!({"error": {"message": msg}}))]),
    ]
}

async fn exercise(relais_base: &str, fake: &FakeUpstream) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut bodies = Vec::new();
    let n = echoing_replies().len();
    for r in echoing_replies() {
        fake.push(r);
    }
    for i in 0..n {
        let body = if i == n - 1 {
            stream_body("hi")
        } else {
            simple_body("hi")
        };
        let resp = client
            .post(format!("{relais_base}/v1/messages"))
            .header("x-api-key", CLIENT_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        assert!(status >= 400, "case {i}: expected an error, got {status}");
        bodies.push(format!(
            "case {i} ({status}): {}",
            resp.text().await.unwrap()
        ));
    }
    assert_eq!(
        fake.request_count(),
        n,
        "every case must reach the upstream, or the test proves nothing"
    );
    for (name, value) in [
        ("x-api-key", WRONG_KEY.to_owned()),
        ("authorization", format!("Bearer {WRONG_KEY}")),
    ] {
        let resp = client
            .post(format!("{relais_base}/v1/messages"))
            .header(name, value)
            .json(&simple_body("hi"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        bodies.push(resp.text().await.unwrap());
    }
    // A client key sent in the body or the model name must not be echoed either.
    let mut b = simple_body("hi");
    b["model"] = json!(format!("model-{CLIENT_KEY}"));
    let resp = client
        .post(format!("{relais_base}/v1/messages"))
        .header("x-api-key", CLIENT_KEY)
        .json(&b)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    bodies
}

#[tokio::test]
async fn keys_never_in_error_bodies() {
    let fake = FakeUpstream::start().await;
    let relais = Relais::with_fake(&fake, &Opts::default()).await;
    let bodies = exercise(&relais.base, &fake).await;
    let mut leaks = Vec::new();
    for b in &bodies {
        for (what, key) in [
            ("provider key", UPSTREAM_KEY),
            ("client key", CLIENT_KEY),
            ("wrong key", WRONG_KEY),
        ] {
            if b.contains(key) {
                leaks.push(format!("{what} in {b}"));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "keys leaked in responses:\n{}",
        leaks.join("\n")
    );
}

#[tokio::test]
async fn keys_never_in_logs() {
    let fake = FakeUpstream::start().await;
    let dir = std::env::temp_dir().join(format!("relais-secrets-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg_path = dir.join("relais.toml");
    std::fs::write(&cfg_path, config(&fake.base_url(), &Opts::default())).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_relais"))
        .args(["serve", "--config"])
        .arg(&cfg_path)
        .args(["--listen", "127.0.0.1:0"])
        .env("RELAIS_LOG", "trace")
        .env("NO_COLOR", "1")
        .env(UPSTREAM_KEY_ENV, UPSTREAM_KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn relais binary");
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    for pipe in [
        Box::new(child.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stdout.take().unwrap()),
    ] {
        let log = log.clone();
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let clean = strip_ansi(&line);
                log.lock().unwrap().push_str(&clean);
                log.lock().unwrap().push('\n');
                if let Some(rest) = clean.split("addr=").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
                }
            }
        });
    }
    let addr = rx.recv_timeout(Duration::from_secs(20));
    let addr = match addr {
        Ok(a) => a,
        Err(_) => {
            let _ = child.kill();
            panic!(
                "relais did not log its address; log:\n{}",
                log.lock().unwrap()
            );
        }
    };
    let base = format!("http://{addr}");
    let _ = exercise(&base, &fake).await;
    // Let the last log lines arrive.
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(500) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let log = log.lock().unwrap().clone();
    assert!(log.contains("relais listening"), "{log}");
    let mut leaks = Vec::new();
    for line in log.lines() {
        for (what, key) in [
            ("provider key", UPSTREAM_KEY),
            ("client key", CLIENT_KEY),
            ("wrong key", WRONG_KEY),
        ] {
            if line.contains(key) {
                leaks.push(format!("{what}: {line}"));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "keys leaked in logs:\n{}",
        leaks.join("\n")
    );
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
