//! Config reload on a running Relais: new models, keys and prices take effect, a stream
//! in flight across the reload completes, an invalid config is refused (field named) and
//! the old one keeps serving, speed estimates and limit counters survive.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::fake_upstream::openai;
use common::limits::{priced, with_limits};
use common::*;
use relais::config::{Config, RawConfig};

const SECOND_KEY: &str = "sk-relais-second-key-0123";

fn validated(text: &str) -> Config {
    let raw: RawConfig = toml::from_str(text).unwrap();
    Config::validate(raw, &|name| {
        (name == UPSTREAM_KEY_ENV).then(|| UPSTREAM_KEY.to_owned())
    })
    .unwrap()
}

fn extended(base: &str) -> String {
    format!(
        r#"{base}
[[keys]]
name = "second"
key = "{SECOND_KEY}"

[[models]]
id = "new-model"
[[models.endpoints]]
provider = "fake"
upstream_model = "upstream-new"
"#
    )
}

async fn ttft_samples(relais: &Relais) -> u64 {
    let (_, _, v) = json_of(relais.get("/relais/endpoints").await).await;
    v["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == "fake/upstream-model-x")
        .map(|e| e["ttft_samples"].as_u64().unwrap())
        .unwrap()
}

#[tokio::test]
async fn reload_applies_new_models_keys_and_prices_without_dropping_a_stream() {
    let fake = FakeUpstream::start().await;
    let base = config(&fake.base_url(), &Opts::default());
    let old = priced(&base, 0.0, 1000.0);
    let relais = Relais::start(&old).await;

    // A finished stream leaves one speed sample.
    fake.push(Reply::sse(openai::text_stream(&["a"])));
    let (status, _, _) = read_sse(relais.messages(&stream_body("x")).await).await;
    assert_eq!(status, 200);
    assert_eq!(ttft_samples(&relais).await, 1);

    // A stream whose end arrives only after the reload.
    let mut frames: Vec<(Duration, String)> = openai::text_stream(&["Hel", "lo"])
        .into_iter()
        .map(|f| (Duration::ZERO, f))
        .collect();
    frames[2].0 = Duration::from_millis(600);
    fake.push(Reply::Sse {
        frames,
        end: StreamEnd::Close,
    });
    let in_flight = relais.messages(&stream_body("y")).await;
    assert_eq!(in_flight.status(), 200);

    // Before: the new key and model are unknown.
    expect_error(
        relais.messages_as(SECOND_KEY, &simple_body("z")).await,
        401,
        "authentication_error",
    )
    .await;
    let mut nb = simple_body("z");
    nb["model"] = "new-model".into();
    expect_error(relais.messages(&nb).await, 404, "not_found_error").await;

    relais
        .reloader()
        .apply(validated(&extended(&priced(&base, 0.0, 2000.0))))
        .unwrap();

    // The stream started before the reload completes, whole.
    let (_, _, text) = read_sse(in_flight).await;
    let events = parse_sse(&text);
    let blocks = assert_stream_grammar(&events);
    assert_eq!(blocks[0].1, "Hello");
    // Estimates carried over: the old sample, and the in-flight stream's, in the new router.
    assert_eq!(ttft_samples(&relais).await, 2);

    fake.set_default(Reply::json(openai::chat_response("ok")));
    let (status, h, body) = json_of(relais.messages_as(SECOND_KEY, &nb).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(header(&h, "x-relais-model"), Some("new-model"));
    // The new price: 7 output tokens × 2000 EUR/Mtok.
    let (_, h, _) = json_of(relais.messages(&simple_body("p")).await).await;
    assert_eq!(header(&h, "x-relais-cost-eur"), Some("0.01400000"));
    relais.stop().await;
}

#[tokio::test]
async fn an_invalid_config_is_refused_with_the_field_named_and_the_old_keeps_serving() {
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::json(openai::chat_response("ok")));
    let base = config(&fake.base_url(), &Opts::default());
    let relais = Relais::start(&base).await;
    let dir = std::env::temp_dir().join(format!("relais-reload-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("relais.toml");
    // Without the provider key variable, which the file loader would read from the
    // process environment (tests do not set it).
    let bad = priced(&extended(&base), -1.0, 0.0)
        .replace(&format!("api_key_env = \"{UPSTREAM_KEY_ENV}\"\n"), "");
    assert!(!bad.contains(UPSTREAM_KEY_ENV));
    std::fs::write(&path, bad).unwrap();

    let e = relais.reloader().reload(&path).unwrap_err().to_string();
    assert!(
        e.contains("models[1].endpoints[0].price_input_per_mtok"),
        "{e}"
    );
    std::fs::write(&path, "[server]\nlisten = 3\n").unwrap();
    let e = relais.reloader().reload(&path).unwrap_err().to_string();
    assert!(e.contains("listen"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);

    // The old config serves on: the old key works, the new one does not.
    assert_eq!(relais.messages(&simple_body("a")).await.status(), 200);
    assert_eq!(
        relais
            .messages_as(SECOND_KEY, &simple_body("a"))
            .await
            .status(),
        401
    );
    relais.stop().await;
}

#[tokio::test]
async fn limit_counters_survive_a_reload_and_new_limits_apply_at_once() {
    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::json(openai::chat_response("ok")));
    let base = config(&fake.base_url(), &Opts::default());
    let relais = Relais::start(&with_limits(&base, "requests_per_min = 5")).await;
    common::limits::same_minute_for(Duration::from_secs(10)).await;
    for _ in 0..2 {
        assert_eq!(relais.messages(&simple_body("a")).await.status(), 200);
    }
    // Now two requests a minute: the two already made count.
    relais
        .reloader()
        .apply(validated(&with_limits(&base, "requests_per_min = 3")))
        .unwrap();
    let (status, h, _) = json_of(relais.messages(&simple_body("b")).await).await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&h, "anthropic-ratelimit-requests-remaining"),
        Some("0")
    );
    expect_error(
        relais.messages(&simple_body("c")).await,
        429,
        "rate_limit_error",
    )
    .await;
    relais.stop().await;
}

/// The real binary: `--log-format json` gives one JSON object per line (the per-request
/// line with its fields), and SIGHUP reloads the file or logs why not.
#[tokio::test]
async fn sighup_reloads_the_binary_and_logs_are_json() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::sync::{Arc, Mutex};

    let fake = FakeUpstream::start().await;
    fake.set_default(Reply::json(openai::chat_response("ok")));
    let dir = std::env::temp_dir().join(format!("relais-hup-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("relais.toml");
    let base = config(&fake.base_url(), &Opts::default());
    std::fs::write(&path, &base).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_relais"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("RELAIS_LOG_FORMAT", "json")
        .env(UPSTREAM_KEY_ENV, UPSTREAM_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn relais binary");
    let lines = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let v = serde_json::from_str(&line)
                .unwrap_or_else(|e| serde_json::json!({"not_json": line, "error": e.to_string()}));
            sink.lock().unwrap().push(v);
        }
    });
    let listening = wait_line(&lines, "relais listening").await;
    let base_url = format!("http://{}", listening["addr"].as_str().unwrap());
    let client = reqwest::Client::new();
    let models = || async {
        let v: serde_json::Value = client
            .get(format!("{base_url}/v1/models"))
            .header("x-api-key", CLIENT_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["data"].as_array().unwrap().len()
    };
    assert_eq!(models().await, 1);
    let sighup = || {
        let ok = Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };

    std::fs::write(&path, extended(&base)).unwrap();
    sighup();
    wait_line(&lines, "config reloaded").await;
    assert_eq!(models().await, 2);

    std::fs::write(&path, priced(&extended(&base), -1.0, 0.0)).unwrap();
    sighup();
    let rejected = wait_line(&lines, "config reload rejected").await;
    assert_eq!(rejected["level"], "ERROR");
    assert!(rejected["error"]
        .as_str()
        .unwrap()
        .contains("models[1].endpoints[0].price_input_per_mtok"));
    assert_eq!(models().await, 2);

    let resp = client
        .post(format!("{base_url}/v1/messages"))
        .header("x-api-key", CLIENT_KEY)
        .json(&simple_body("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let line = wait_line(&lines, "request").await;
    assert_eq!(line["http_status"], 200);
    assert_eq!(line["key"], "test");
    assert!(line["request_id"].as_str().unwrap().starts_with("req_"));
    assert!(lines
        .lock()
        .unwrap()
        .iter()
        .all(|l| l.get("not_json").is_none()));
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The first JSON log line whose message is `msg` or starts with `msg;`, waited for (5 s).
async fn wait_line(
    lines: &std::sync::Mutex<Vec<serde_json::Value>>,
    msg: &str,
) -> serde_json::Value {
    for _ in 0..200 {
        let found = lines.lock().unwrap().iter().find_map(|l| {
            let m = l["message"].as_str()?;
            (m == msg || m.starts_with(&format!("{msg};"))).then(|| l.clone())
        });
        if let Some(v) = found {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no `{msg}` log line: {:?}", lines.lock().unwrap());
}
