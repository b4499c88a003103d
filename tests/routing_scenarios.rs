//! Routing scenarios end to end: the real in-process server in front of several fake
//! upstreams, each a separate provider with its own compliance flags, prices and scripted
//! latency or failures. What each provider received is the evidence: a request that must
//! not leave its allowed set is checked by the non-compliant fakes' request counts.
//!
//! Determinism: exploration and near-equal load sharing are off unless a test says
//! otherwise, and the compliant endpoints are made the *least* attractive ones, so that a
//! leak would be the router's first choice, not an accident of ordering.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::fake_upstream::openai;
use common::*;
use serde_json::{json, Value};

// ---------- the scenario world ----------

/// A provider: its name and compliance flags. Each gets its own fake upstream.
#[derive(Clone, Copy)]
struct P {
    name: &'static str,
    eu: bool,
    zdr: bool,
}

const fn prov(name: &'static str, eu: bool, zdr: bool) -> P {
    P { name, eu, zdr }
}

/// An endpoint of a model: provider, upstream model, price (EUR per Mtok, input and output
/// alike) and any other TOML lines (priors, limits).
struct E {
    provider: &'static str,
    upstream: &'static str,
    price: f64,
    extra: String,
}

fn ep(provider: &'static str, upstream: &'static str, price: f64) -> E {
    E {
        provider,
        upstream,
        price,
        extra: String::new(),
    }
}

impl E {
    fn with(mut self, toml: &str) -> E {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }
}

struct M {
    id: &'static str,
    fallbacks: &'static [&'static str],
    endpoints: Vec<E>,
}

fn model(id: &'static str, fallbacks: &'static [&'static str], endpoints: Vec<E>) -> M {
    M {
        id,
        fallbacks,
        endpoints,
    }
}

/// `[routing]` of a scenario. Defaults: no exploration, no near-equal sharing, breakers
/// that practically never open, four attempts.
#[derive(Clone)]
struct Routing {
    total_timeout_s: f64,
    max_attempts: u32,
    breaker_failures: u32,
    breaker_cooldown_s: f64,
    explore_probability: f64,
    near_equal_margin: f64,
    first_byte_timeout_s: f64,
    request_timeout_s: f64,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            total_timeout_s: 10.0,
            max_attempts: 4,
            breaker_failures: 100,
            breaker_cooldown_s: 30.0,
            explore_probability: 0.0,
            near_equal_margin: 0.0,
            first_byte_timeout_s: 0.3,
            request_timeout_s: 0.5,
        }
    }
}

struct World {
    relais: Relais,
    fakes: BTreeMap<&'static str, FakeUpstream>,
}

impl World {
    /// Starts one fake per provider (each answering "from <provider>" until scripted
    /// otherwise) and Relais with this catalog. `keys` are extra `[[keys]]` tables.
    async fn start(providers: &[P], models: Vec<M>, keys: &str, r: &Routing) -> World {
        let mut fakes = BTreeMap::new();
        for p in providers {
            let f = FakeUpstream::start().await;
            f.set_default(ok(p.name, false));
            fakes.insert(p.name, f);
        }
        let mut toml = format!(
            r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace_s = 1

[routing]
total_timeout_s = {}
max_attempts = {}
breaker_failures = {}
breaker_cooldown_s = {}
explore_probability = {}
near_equal_margin = {}

[[keys]]
name = "test"
key = "{CLIENT_KEY}"
{keys}
"#,
            r.total_timeout_s,
            r.max_attempts,
            r.breaker_failures,
            r.breaker_cooldown_s,
            r.explore_probability,
            r.near_equal_margin,
        );
        for p in providers {
            toml.push_str(&format!(
                r#"
[providers.{name}]
api = "openai"
base_url = "{url}"
api_key_env = "{UPSTREAM_KEY_ENV}"
eu_native = {eu}
zero_data_retention = {zdr}
first_byte_timeout_s = {fb}
request_timeout_s = {rt}
idle_timeout_s = 2
connect_timeout_s = 1
"#,
                name = p.name,
                url = fakes[p.name].base_url(),
                eu = p.eu,
                zdr = p.zdr,
                fb = r.first_byte_timeout_s,
                rt = r.request_timeout_s,
            ));
        }
        for m in models {
            let fallbacks: Vec<String> = m.fallbacks.iter().map(|f| format!("\"{f}\"")).collect();
            toml.push_str(&format!(
                "\n[[models]]\nid = \"{}\"\nfallbacks = [{}]\n",
                m.id,
                fallbacks.join(", ")
            ));
            for e in m.endpoints {
                toml.push_str(&format!(
                    "\n[[models.endpoints]]\nprovider = \"{}\"\nupstream_model = \"{}\"\n\
                     price_input_per_mtok = {}\nprice_output_per_mtok = {}\n{}",
                    e.provider, e.upstream, e.price, e.price, e.extra
                ));
            }
        }
        World {
            relais: Relais::start(&toml).await,
            fakes,
        }
    }

    fn fake(&self, name: &str) -> &FakeUpstream {
        &self.fakes[name]
    }

    /// Requests each provider received so far.
    fn counts(&self) -> BTreeMap<&'static str, usize> {
        self.fakes
            .iter()
            .map(|(n, f)| (*n, f.request_count()))
            .collect()
    }

    /// Every provider answers normally again (JSON or SSE).
    fn all_ok(&self, stream: bool) {
        for (n, f) in &self.fakes {
            f.set_default(ok(n, stream));
        }
    }

    async fn send(&self, body: &Value) -> reqwest::Response {
        self.relais.messages(body).await
    }

    /// One endpoint's live state from `GET /relais/endpoints`.
    async fn endpoint(&self, id: &str) -> Value {
        let (status, _, v) = json_of(self.relais.get("/relais/endpoints").await).await;
        assert_eq!(status, 200, "{v}");
        v["endpoints"]
            .as_array()
            .expect("endpoints array")
            .iter()
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("no endpoint {id} in {v}"))
            .clone()
    }
}

fn counts(pairs: &[(&'static str, usize)]) -> BTreeMap<&'static str, usize> {
    pairs.iter().copied().collect()
}

/// A normal answer saying which provider gave it: a chat completion, or a complete stream.
fn ok(provider: &str, stream: bool) -> Reply {
    let text = format!("from {provider}");
    if stream {
        Reply::sse(openai::text_stream(&["from ", provider]))
    } else {
        Reply::json(openai::chat_response(&text))
    }
}

fn e500() -> Reply {
    Reply::error(
        500,
        json!({"error": {"message": "internal failure", "type": "server_error"}}),
    )
}

/// A Messages body for `model` with the router fields of `fields` merged in.
fn req(model: &str, stream: bool, fields: Value) -> Value {
    let mut b = json!({
        "model": model,
        "max_tokens": 64,
        "stream": stream,
        "messages": [{"role": "user", "content": "route me"}]
    });
    for (k, v) in fields.as_object().expect("fields object") {
        b[k] = v.clone();
    }
    b
}

/// A successful answer, whichever the mode, checked to be clean and complete.
struct Answer {
    headers: reqwest::header::HeaderMap,
    text: String,
    model: String,
    /// The routing trace, when `include_metadata` was asked for.
    relais: Option<Value>,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        header(&self.headers, name).unwrap_or_else(|| panic!("no {name} header"))
    }
    fn endpoint(&self) -> &str {
        self.header("x-relais-endpoint")
    }
    fn attempts(&self) -> &str {
        self.header("x-relais-attempts")
    }
}

/// Asserts a 200 with one clean answer: a full message, or a stream with the complete
/// event sequence (message_start … message_stop) and no error event.
async fn answer(resp: reqwest::Response, stream: bool) -> Answer {
    if stream {
        let (status, headers, text) = read_sse(resp).await;
        assert_eq!(status, 200, "{text}");
        let events = parse_sse(&text);
        assert!(
            !names(&events).contains(&"error"),
            "a clean answer has no error event: {:?}",
            names(&events)
        );
        let blocks = assert_stream_grammar(&events);
        let model = events[0].data["message"]["model"]
            .as_str()
            .expect("model in message_start")
            .to_owned();
        let relais = events
            .iter()
            .find(|e| e.name == "message_delta")
            .and_then(|e| e.data.get("relais").cloned());
        Answer {
            headers,
            text: blocks.iter().map(|b| b.1.as_str()).collect(),
            model,
            relais,
        }
    } else {
        let (status, headers, v) = json_of(resp).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["type"], "message", "{v}");
        assert!(v["stop_reason"].is_string(), "{v}");
        Answer {
            headers,
            text: v["content"][0]["text"].as_str().unwrap_or("").to_owned(),
            model: v["model"].as_str().expect("model").to_owned(),
            relais: v.get("relais").cloned(),
        }
    }
}

/// Asserts an error answer (4xx/5xx, Anthropic envelope); returns status and message.
async fn error_answer(resp: reqwest::Response) -> (u16, String) {
    let (status, _, v) = json_of(resp).await;
    assert!(status >= 400, "expected an error, got {status}: {v}");
    (
        status,
        assert_error_envelope(&v, v["error"]["type"].as_str().unwrap_or("?")),
    )
}

// ---------- 1. compliance: requests never leave their allowed set ----------

/// eu+zdr, eu-only, zdr-only (not EU) and neither. The non-compliant ones are the cheapest,
/// so `preference: cost` would pick them first if a filter let them through.
const COMPLIANCE: [P; 4] = [
    prov("euzdr", true, true),
    prov("eu", true, false),
    prov("zdr", false, true),
    prov("us", false, false),
];

fn compliance_models(fallbacks: &'static [&'static str]) -> Vec<M> {
    vec![
        model(
            "x",
            fallbacks,
            vec![
                ep("euzdr", "x-up", 0.4),
                ep("eu", "x-up", 0.3),
                ep("zdr", "x-up", 0.2),
                ep("us", "x-up", 0.1),
            ],
        ),
        model(
            "y",
            &[],
            vec![
                ep("euzdr", "y-up", 0.4),
                ep("eu", "y-up", 0.3),
                ep("zdr", "y-up", 0.2),
                ep("us", "y-up", 0.1),
            ],
        ),
    ]
}

async fn compliance_world(keys: &str) -> World {
    World::start(
        &COMPLIANCE,
        compliance_models(&[]),
        keys,
        &Routing::default(),
    )
    .await
}

/// The allowed endpoints fail (500, and a hang or 503), so fallback runs through all of
/// them: the error reaches the client and the others never see the request.
fn fail_allowed(w: &World, allowed: &[&str], stream: bool) {
    for (i, name) in allowed.iter().enumerate() {
        let r = match (i, stream) {
            (0, _) => e500(),
            (_, true) => Reply::Hang,
            (_, false) => Reply::error(503, json!({"error": {"message": "overloaded"}})),
        };
        w.fake(name).set_default(r);
    }
}

/// Without restrictions, the cheapest endpoint (`us`) answers: the non-compliant fakes are
/// healthy and preferred, so only the filters kept traffic away from them.
async fn control_goes_to_us(w: &World) {
    let before = w.fake("us").request_count();
    let a = answer(
        w.send(&req("x", false, json!({"preference": "cost"})))
            .await,
        false,
    )
    .await;
    assert_eq!(a.endpoint(), "us/x-up");
    assert_eq!(w.fake("us").request_count(), before + 1);
}

#[tokio::test]
async fn eu_native_request_never_leaves_the_eu_even_when_every_eu_endpoint_fails() {
    for stream in [false, true] {
        let w = compliance_world("").await;
        w.all_ok(stream);
        fail_allowed(&w, &["euzdr", "eu"], stream);
        let t = Instant::now();
        let resp = w
            .send(&req(
                "x",
                stream,
                json!({"eu_native": true, "preference": "cost"}),
            ))
            .await;
        let (status, _) = error_answer(resp).await;
        assert!(status >= 500, "stream={stream}: {status}");
        assert!(t.elapsed() < Duration::from_secs(5), "bounded by timeouts");
        assert_eq!(
            w.counts(),
            counts(&[("euzdr", 1), ("eu", 1), ("zdr", 0), ("us", 0)]),
            "stream={stream}: both EU endpoints tried, nothing else"
        );
        w.all_ok(false);
        control_goes_to_us(&w).await;
    }
}

#[tokio::test]
async fn zero_retention_request_never_reaches_a_retaining_provider() {
    for stream in [false, true] {
        let w = compliance_world("").await;
        w.all_ok(stream);
        fail_allowed(&w, &["euzdr", "zdr"], stream);
        let resp = w
            .send(&req(
                "x",
                stream,
                json!({"allow_zero_data_retention": true, "preference": "cost"}),
            ))
            .await;
        let (status, _) = error_answer(resp).await;
        assert!(status >= 500, "stream={stream}: {status}");
        assert_eq!(
            w.counts(),
            counts(&[("euzdr", 1), ("eu", 0), ("zdr", 1), ("us", 0)]),
            "stream={stream}"
        );
        w.all_ok(false);
        control_goes_to_us(&w).await;
    }
}

const FLOOR_KEYS: &str = r#"
[[keys]]
name = "eu-floor"
key = "sk-relais-eu-floor-0123456789"
eu_native = true

[[keys]]
name = "zdr-floor"
key = "sk-relais-zdr-floor-0123456789"
allow_zero_data_retention = true
"#;

#[tokio::test]
async fn a_key_policy_floor_cannot_be_loosened_by_the_request() {
    let loosen = json!({"eu_native": false, "allow_zero_data_retention": false,
                        "preference": "cost"});
    for (key, allowed, want) in [
        (
            "sk-relais-eu-floor-0123456789",
            ["euzdr", "eu"],
            [("euzdr", 1), ("eu", 1), ("zdr", 0), ("us", 0)],
        ),
        (
            "sk-relais-zdr-floor-0123456789",
            ["euzdr", "zdr"],
            [("euzdr", 1), ("eu", 0), ("zdr", 1), ("us", 0)],
        ),
    ] {
        for stream in [false, true] {
            let w = compliance_world(FLOOR_KEYS).await;
            w.all_ok(stream);
            fail_allowed(&w, &allowed, stream);
            let resp = w
                .relais
                .messages_as(key, &req("x", stream, loosen.clone()))
                .await;
            let (status, _) = error_answer(resp).await;
            assert!(status >= 500, "{key} stream={stream}: {status}");
            assert_eq!(w.counts(), counts(&want), "{key} stream={stream}");
            // And when the allowed endpoints answer, the cheapest allowed one does.
            w.all_ok(false);
            let a = answer(
                w.relais
                    .messages_as(key, &req("x", false, loosen.clone()))
                    .await,
                false,
            )
            .await;
            assert_eq!(a.endpoint(), format!("{}/x-up", allowed[1]), "{key}");
            assert_eq!(w.fake("us").request_count(), 0, "{key}");
        }
    }
}

const PROVIDER_KEY: &str = r#"
[[keys]]
name = "eu-providers"
key = "sk-relais-eu-providers-0123456789"
allowed_providers = ["euzdr", "eu"]
"#;

#[tokio::test]
async fn allowed_providers_of_key_and_request_intersect() {
    let key = "sk-relais-eu-providers-0123456789";
    for stream in [false, true] {
        let w = compliance_world(PROVIDER_KEY).await;
        w.all_ok(stream);
        // Key {euzdr, eu} ∩ request {eu, us} = {eu}: `us` cannot be added by the request,
        // `euzdr` is dropped by it.
        fail_allowed(&w, &["eu"], stream);
        let body = req(
            "x",
            stream,
            json!({"allowed_providers": ["eu", "us"], "preference": "cost"}),
        );
        let (status, _) = error_answer(w.relais.messages_as(key, &body).await).await;
        assert_eq!(status, 502, "stream={stream}");
        assert_eq!(
            w.counts(),
            counts(&[("euzdr", 0), ("eu", 1), ("zdr", 0), ("us", 0)]),
            "stream={stream}"
        );
        // Disjoint sets: nothing is eligible, and nothing is relaxed.
        let body = req("x", stream, json!({"allowed_providers": ["us"]}));
        let resp = w.relais.messages_as(key, &body).await;
        let msg = expect_error(resp, 400, "invalid_request_error").await;
        assert!(
            msg.contains("`us/x-up` of `x` removed by allowed_providers"),
            "{msg}"
        );
        assert_eq!(w.fake("us").request_count(), 0);
    }
    // The same request with an unrestricted key goes where the request allows: `us` first.
    let w = compliance_world(PROVIDER_KEY).await;
    let body = req(
        "x",
        false,
        json!({"allowed_providers": ["eu", "us"], "preference": "cost"}),
    );
    let a = answer(w.send(&body).await, false).await;
    assert_eq!(a.endpoint(), "us/x-up");
}

#[tokio::test]
async fn model_fallback_never_reaches_a_non_compliant_endpoint_of_the_fallback_model() {
    for stream in [false, true] {
        let w = World::start(
            &COMPLIANCE,
            compliance_models(&["y"]),
            "",
            &Routing {
                max_attempts: 8,
                ..Routing::default()
            },
        )
        .await;
        w.all_ok(stream);
        // Every EU endpoint of both models fails.
        fail_allowed(&w, &["euzdr", "eu"], stream);
        let body = req(
            "x",
            stream,
            json!({"eu_native": true, "preference": "cost"}),
        );
        let (status, _) = error_answer(w.send(&body).await).await;
        assert!(status >= 500, "stream={stream}: {status}");
        for f in ["euzdr", "eu"] {
            for m in ["x-up", "y-up"] {
                assert_eq!(
                    w.fake(f).request_count_for(m),
                    1,
                    "stream={stream}: {f}/{m} tried once"
                );
            }
        }
        assert_eq!(
            (w.fake("zdr").request_count(), w.fake("us").request_count()),
            (0, 0)
        );

        // Now y's EU endpoint answers: the fallback model serves, still from the EU.
        w.fake("eu").set_model_default("y-up", ok("eu", stream));
        let a = answer(w.send(&body).await, stream).await;
        assert_eq!(a.endpoint(), "eu/y-up", "stream={stream}");
        assert_eq!(a.model, "y");
        assert_eq!(a.header("x-relais-model-fallback"), "true");
        assert_eq!(
            (w.fake("zdr").request_count(), w.fake("us").request_count()),
            (0, 0)
        );
    }
}

// ---------- 2. speed: the faster endpoint, and following a change ----------

/// Two equal-priced providers serving the same model over streams.
async fn speed_world() -> World {
    World::start(
        &[prov("a", false, false), prov("b", false, false)],
        vec![model(
            "x",
            &[],
            vec![ep("a", "x-up", 1.0), ep("b", "x-up", 1.0)],
        )],
        "",
        &Routing {
            first_byte_timeout_s: 5.0,
            ..Routing::default()
        },
    )
    .await
}

fn latency(w: &World, name: &str, ms: u64) {
    w.fake(name).set_default(Reply::sse_after(
        Duration::from_millis(ms),
        openai::text_stream(&["from ", name]),
    ));
}

async fn speed_request(w: &World, fields: Value) -> String {
    let mut f = json!({"preference": "speed"});
    for (k, v) in fields.as_object().unwrap() {
        f[k] = v.clone();
    }
    answer(w.send(&req("x", true, f)).await, true)
        .await
        .endpoint()
        .to_owned()
}

#[tokio::test]
async fn speed_preference_picks_the_faster_endpoint_and_follows_a_change() {
    let w = speed_world().await;
    latency(&w, "a", 20);
    latency(&w, "b", 150);
    // Warm-up: three streams on each, so that both have learned TTFTs.
    for p in ["a", "b"] {
        for _ in 0..3 {
            let got = speed_request(&w, json!({"allowed_providers": [p]})).await;
            assert_eq!(got, format!("{p}/x-up"));
        }
    }
    let (ea, eb) = (w.endpoint("a/x-up").await, w.endpoint("b/x-up").await);
    assert_eq!(
        (ea["ttft_samples"].as_u64(), eb["ttft_samples"].as_u64()),
        (Some(3), Some(3))
    );
    assert!(
        ea["ttft_ms"].as_f64().unwrap() < eb["ttft_ms"].as_f64().unwrap(),
        "learned TTFTs: a {ea}, b {eb}"
    );
    for _ in 0..4 {
        assert_eq!(speed_request(&w, json!({})).await, "a/x-up");
    }
    assert_eq!(w.counts(), counts(&[("a", 7), ("b", 3)]));

    // A becomes slow, B fast: A's estimate rises with each slow answer until B's (stale,
    // 150 ms) estimate is better; B then answers fast and keeps the traffic.
    latency(&w, "a", 400);
    latency(&w, "b", 20);
    let mut seq = Vec::new();
    for _ in 0..8 {
        seq.push(speed_request(&w, json!({})).await);
    }
    let first_b = seq
        .iter()
        .position(|e| e == "b/x-up")
        .unwrap_or_else(|| panic!("never switched to b: {seq:?}"));
    assert!(first_b <= 4, "switched too late: {seq:?}");
    assert!(
        seq[first_b..].iter().all(|e| e == "b/x-up"),
        "once b is faster it keeps the traffic: {seq:?}"
    );
}

/// The other direction: B recovers (becomes the faster one) while A stays as it was. B's
/// estimate is only refreshed by traffic, and exploration only helps endpoints with no
/// samples at all, so B's stale 150 ms keeps it behind A's 60 ms forever.
/// Estimates do not decay, so a sampled endpoint that became faster is only noticed through
/// exploration (`routing.explore_probability`), which also tries already-sampled endpoints.
#[tokio::test]
async fn speed_preference_notices_when_the_other_endpoint_becomes_faster() {
    let w = World::start(
        &[prov("a", false, false), prov("b", false, false)],
        vec![model(
            "x",
            &[],
            vec![ep("a", "x-up", 1.0), ep("b", "x-up", 1.0)],
        )],
        "",
        &Routing {
            first_byte_timeout_s: 5.0,
            explore_probability: 0.25,
            ..Routing::default()
        },
    )
    .await;
    latency(&w, "a", 40);
    latency(&w, "b", 150);
    for p in ["a", "b"] {
        for _ in 0..3 {
            speed_request(&w, json!({"allowed_providers": [p]})).await;
        }
    }
    let ttft = |v: &Value| v["ttft_ms"].as_f64().unwrap_or(f64::NAN);
    let (a0, b0) = (
        ttft(&w.endpoint("a/x-up").await),
        ttft(&w.endpoint("b/x-up").await),
    );
    assert!(b0 > a0, "b starts slower: a {a0} b {b0}");
    latency(&w, "b", 5);
    // 60 requests at a 25% exploration rate try b about 15 times (fewer than 5 has
    // probability below 1e-4); a handful of samples bring its estimate under a's.
    for _ in 0..60 {
        speed_request(&w, json!({})).await;
    }
    let (a1, b1) = (
        ttft(&w.endpoint("a/x-up").await),
        ttft(&w.endpoint("b/x-up").await),
    );
    assert!(b1 < a1, "b (now 5 ms) not noticed: a {a1} b {b1}");
}

// ---------- 3. cost, and the balanced trace ----------

#[tokio::test]
async fn cost_preference_picks_the_cheaper_endpoint() {
    // `dear` is listed first and has the faster prior, so only the price favours `cheap`.
    let w = World::start(
        &[prov("dear", false, false), prov("cheap", false, false)],
        vec![model(
            "x",
            &[],
            vec![
                ep("dear", "x-up", 5.0).with("prior_ttft_ms = 100\nprior_tokens_per_s = 200"),
                ep("cheap", "x-up", 0.5).with("prior_ttft_ms = 2000\nprior_tokens_per_s = 20"),
            ],
        )],
        "",
        &Routing::default(),
    )
    .await;
    for stream in [false, true] {
        w.all_ok(stream);
        for _ in 0..3 {
            let a = answer(
                w.send(&req("x", stream, json!({"preference": "cost"})))
                    .await,
                stream,
            )
            .await;
            assert_eq!(a.endpoint(), "cheap/x-up");
            assert_eq!(a.text, "from cheap");
            assert_eq!(a.attempts(), "1");
        }
    }
    assert_eq!(w.counts(), counts(&[("cheap", 6), ("dear", 0)]));
    // The same catalog under `speed` goes to the other one: the preference decided.
    w.all_ok(false);
    let a = answer(
        w.send(&req("x", false, json!({"preference": "speed"})))
            .await,
        false,
    )
    .await;
    assert_eq!(a.endpoint(), "dear/x-up");
}

fn num(v: &Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number in {v}"))
}

/// Checks the documented shape of a routing trace and its arithmetic.
fn check_balanced_trace(t: &Value, answered_by: &str) {
    assert_eq!(t["requested_model"], "x");
    assert_eq!(t["model"], "x");
    assert_eq!(t["policy"]["preference"], "balanced");
    assert_eq!(t["policy"]["eu_native"], true);
    assert_eq!(t["blend"]["speed_weight"], 0.5);
    assert_eq!(t["blend"]["cost_weight"], 0.5);
    assert_eq!(t["blend"]["normalisation"], "divide_by_max");
    assert!(t["est_input_tokens"].as_u64().unwrap() > 0, "{t}");
    assert_eq!(t["requested_max_tokens"], 64);
    assert_eq!(t["models_considered"], json!(["x"]));

    let cands = t["candidates"].as_array().expect("candidates");
    let eps: Vec<&str> = cands
        .iter()
        .map(|c| c["endpoint"].as_str().unwrap())
        .collect();
    assert_eq!(eps.len(), 2, "two eligible endpoints: {eps:?}");
    assert!(
        eps.contains(&"fast/x-up") && eps.contains(&"cheap/x-up"),
        "{eps:?}"
    );
    let mut last = f64::MIN;
    let (mut max_t, mut max_c) = (0.0f64, 0.0f64);
    for (i, c) in cands.iter().enumerate() {
        assert_eq!(c["rank"], i + 1, "{c}");
        assert_eq!(c["model"], "x");
        assert_eq!(c["is_fallback_model"], false);
        for f in [
            "predicted_ttft_ms",
            "decode_tokens_per_s",
            "predicted_seconds",
            "predicted_cost_eur",
            "normalised_time",
            "normalised_cost",
            "score",
        ] {
            assert!(num(c, f) >= 0.0, "{f} in {c}");
        }
        assert!(
            c["speed_samples"].is_u64() && c["expected_output_tokens"].is_u64(),
            "{c}"
        );
        assert!(
            c["near_equal"].is_boolean() && c["explored"].is_boolean(),
            "{c}"
        );
        let (nt, nc, s) = (
            num(c, "normalised_time"),
            num(c, "normalised_cost"),
            num(c, "score"),
        );
        assert!(
            (s - (0.5 * nt + 0.5 * nc)).abs() < 1e-9,
            "score = blend: {c}"
        );
        assert!(s >= last, "candidates in score order: {cands:?}");
        last = s;
        max_t = max_t.max(nt);
        max_c = max_c.max(nc);
    }
    assert!(
        (max_t - 1.0).abs() < 1e-9 && (max_c - 1.0).abs() < 1e-9,
        "divide by max"
    );

    let excluded = t["excluded"].as_array().expect("excluded");
    assert_eq!(excluded.len(), 1, "{excluded:?}");
    let ex = &excluded[0];
    assert_eq!(ex["endpoint"], "us/x-up");
    assert_eq!(ex["model"], "x");
    assert_eq!(ex["filter"], "eu_native");
    assert!(
        ex["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not EU-native")),
        "{ex}"
    );
    let attempts = t["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0]["outcome"], "ok");
    assert_eq!(attempts[0]["endpoint"], answered_by);
    assert_eq!(t["answered_by_endpoint"], answered_by);
    assert_eq!(t["answered_by_model"], "x");
    assert!(num(t, "cost_eur") > 0.0, "{t}");
}

#[tokio::test]
async fn balanced_routing_is_explained_in_the_trace() {
    let w = World::start(
        &[
            prov("fast", true, false),
            prov("cheap", true, false),
            prov("us", false, false),
        ],
        vec![model(
            "x",
            &[],
            vec![
                ep("fast", "x-up", 3.0).with("prior_ttft_ms = 100\nprior_tokens_per_s = 200"),
                ep("cheap", "x-up", 0.5).with("prior_ttft_ms = 1500\nprior_tokens_per_s = 30"),
                ep("us", "x-up", 0.1),
            ],
        )],
        "",
        &Routing::default(),
    )
    .await;
    for stream in [false, true] {
        w.all_ok(stream);
        let body = req(
            "x",
            stream,
            json!({"eu_native": true, "include_metadata": true}),
        );
        let a = answer(w.send(&body).await, stream).await;
        let trace = a
            .relais
            .clone()
            .unwrap_or_else(|| panic!("stream={stream}: no relais trace"));
        check_balanced_trace(&trace, a.endpoint());
        // The first candidate of the trace is the one that answered.
        assert_eq!(trace["candidates"][0]["endpoint"], a.endpoint());
    }
    assert_eq!(w.fake("us").request_count(), 0);
}

// ---------- 4. provider fallback ----------

/// `a` is cheaper, so under `preference: cost` it is always tried first; `b` answers.
async fn pair(r: Routing) -> World {
    World::start(
        &[prov("a", false, false), prov("b", false, false)],
        vec![model(
            "x",
            &[],
            vec![ep("a", "x-up", 0.1), ep("b", "x-up", 1.0)],
        )],
        "",
        &r,
    )
    .await
}

fn cost(stream: bool) -> Value {
    req(
        "x",
        stream,
        json!({"preference": "cost", "include_metadata": true}),
    )
}

/// One clean answer from `b` after one failed attempt on `a`.
async fn assert_recovered(w: &World, stream: bool, failure_kind: &str) -> Answer {
    let a = answer(w.send(&cost(stream)).await, stream).await;
    assert_eq!(a.endpoint(), "b/x-up", "{failure_kind} stream={stream}");
    assert_eq!(a.attempts(), "2", "{failure_kind} stream={stream}");
    assert_eq!(a.text, "from b");
    assert_eq!(a.model, "x");
    let t = a.relais.as_ref().expect("trace");
    let att = t["attempts"].as_array().unwrap();
    assert_eq!(att.len(), 2, "{att:?}");
    assert_eq!(att[0]["endpoint"], "a/x-up");
    assert_eq!(att[0]["outcome"], "error");
    assert_eq!(att[0]["error_kind"], failure_kind, "{att:?}");
    assert_eq!(att[0]["retryable"], true);
    assert_eq!(att[1]["outcome"], "ok");
    a
}

#[tokio::test]
async fn fallback_recovers_from_a_500() {
    let w = pair(Routing::default()).await;
    for stream in [false, true] {
        w.all_ok(stream);
        w.fake("a").set_default(e500());
        assert_recovered(&w, stream, "upstream_5xx").await;
    }
    assert_eq!(w.counts(), counts(&[("a", 2), ("b", 2)]));
}

#[tokio::test]
async fn fallback_recovers_from_a_429_and_skips_the_endpoint_until_retry_after_expires() {
    let w = pair(Routing::default()).await;
    for stream in [false, true] {
        w.all_ok(stream);
        let before = w.counts();
        w.fake("a").set_default(Reply::error_retry_after(
            429,
            json!({"error": {"message": "slow down"}}),
            "1",
        ));
        assert_recovered(&w, stream, "rate_limited").await;
        let st = w.endpoint("a/x-up").await;
        let left = st["retry_after_ms"]
            .as_u64()
            .unwrap_or_else(|| panic!("retry-after not shown: {st}"));
        assert!(left > 0 && left <= 1000, "{st}");
        assert_eq!(st["last_error"], "rate_limited");

        // While it holds, `a` is skipped: excluded from the plan, not even tried.
        w.fake("a").set_default(ok("a", stream));
        let a = answer(w.send(&cost(stream)).await, stream).await;
        assert_eq!((a.endpoint(), a.attempts()), ("b/x-up", "1"));
        let t = a.relais.unwrap();
        let ex = &t["excluded"][0];
        assert_eq!(
            (&ex["endpoint"], &ex["filter"]),
            (&json!("a/x-up"), &json!("availability"))
        );
        assert!(
            ex["reason"].as_str().unwrap().contains("retry after"),
            "{ex}"
        );
        assert_eq!(w.fake("a").request_count(), before["a"] + 1);

        // Once it expired (bounded wait), `a` is back first.
        let t0 = Instant::now();
        while w.endpoint("a/x-up").await.get("retry_after_ms").is_some() {
            assert!(
                t0.elapsed() < Duration::from_secs(3),
                "retry-after never expired"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let a = answer(w.send(&cost(stream)).await, stream).await;
        assert_eq!((a.endpoint(), a.attempts()), ("a/x-up", "1"));
        assert_eq!(w.fake("a").request_count(), before["a"] + 2);
    }
}

#[tokio::test]
async fn when_only_a_rate_limited_endpoint_could_serve_the_client_gets_503_with_its_retry_after() {
    let w = pair(Routing::default()).await;
    w.all_ok(false);
    w.fake("a").push(Reply::error_retry_after(
        429,
        json!({"error": {"message": "slow down"}}),
        "3",
    ));
    assert_recovered(&w, false, "rate_limited").await;
    let only_a = req("x", false, json!({"allowed_providers": ["a"]}));
    let resp = w.send(&only_a).await;
    let retry_after: u64 = header(resp.headers(), "retry-after")
        .expect("retry-after on the 503")
        .parse()
        .expect("retry-after in seconds");
    let msg = expect_error(resp, 503, "overloaded_error").await;
    assert!(msg.contains("removed by availability"), "{msg}");
    assert_eq!(
        w.fake("a").request_count(),
        1,
        "a blocked endpoint is not called"
    );
    // Told to come back no earlier than the endpoint is available again.
    let left = w.endpoint("a/x-up").await["retry_after_ms"]
        .as_u64()
        .unwrap();
    assert!(
        retry_after * 1000 >= left,
        "retry-after: {retry_after} s, but the endpoint is blocked for {left} ms more"
    );
}

#[tokio::test]
async fn fallback_recovers_from_a_stream_that_hangs_before_its_first_byte() {
    let w = pair(Routing::default()).await; // first_byte_timeout 0.3 s
    w.all_ok(true);
    w.fake("a").set_default(Reply::Hang);
    let t = Instant::now();
    assert_recovered(&w, true, "first_byte_timeout").await;
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
    // A stream whose head comes but whose first content does not is the same.
    w.fake("a").set_default(Reply::sse_then(
        vec![openai::frame(&openai::chunk(
            json!({"role": "assistant", "content": ""}),
            None,
        ))],
        StreamEnd::Hang,
    ));
    assert_recovered(&w, true, "first_byte_timeout").await;
    assert_eq!(w.counts(), counts(&[("a", 2), ("b", 2)]));
}

#[tokio::test]
async fn fallback_recovers_from_a_non_stream_answer_that_hangs() {
    // Non-streaming answers have no first byte before the whole generation: each attempt
    // is bounded by the provider's request_timeout_s (0.5 s here), which leaves time in the
    // 3 s deadline for the next endpoint.
    let w = pair(Routing {
        total_timeout_s: 3.0,
        ..Routing::default()
    })
    .await;
    w.all_ok(false);
    w.fake("a").set_default(Reply::Hang);
    let t = Instant::now();
    assert_recovered(&w, false, "request_timeout").await;
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[tokio::test]
async fn fallback_recovers_from_a_stream_that_dies_before_content() {
    let w = pair(Routing::default()).await;
    w.all_ok(true);
    let role = openai::frame(&openai::chunk(
        json!({"role": "assistant", "content": ""}),
        None,
    ));
    for (dead, kind) in [
        // A cut connection surfaces as a body decoding error.
        (
            Reply::sse_then(vec![role.clone()], StreamEnd::Abort),
            "protocol",
        ),
        (Reply::sse(vec![role]), "truncated"),
        (Reply::raw(200, "text/event-stream", b""), "truncated"),
        // An error object in the stream before any content.
        (
            Reply::sse(vec![openai::frame(
                &json!({"error": {"message": "model crashed", "type": "server_error"}}),
            )]),
            "stream_error",
        ),
    ] {
        w.fake("a").set_default(dead);
        let a = assert_recovered(&w, true, kind).await;
        assert_eq!(a.text, "from b");
    }
    // The non-streaming counterpart: a 200 whose body is cut.
    w.all_ok(false);
    w.fake("a").set_default(Reply::raw(
        200,
        "application/json",
        b"{\"choices\": [ {\"mess",
    ));
    assert_recovered(&w, false, "protocol").await;
    assert_eq!(w.counts(), counts(&[("a", 5), ("b", 5)]));
}

#[tokio::test]
async fn an_upstream_400_is_not_retried_elsewhere() {
    let w = pair(Routing::default()).await;
    for stream in [false, true] {
        w.all_ok(stream);
        w.fake("a").set_default(Reply::error(
            400,
            json!({"error": {"message": "bad tool schema", "type": "invalid_request_error"}}),
        ));
        let msg = expect_error(w.send(&cost(stream)).await, 400, "invalid_request_error").await;
        assert!(msg.contains("bad tool schema"), "{msg}");
    }
    assert_eq!(w.counts(), counts(&[("a", 2), ("b", 0)]));
    // A client fault says nothing about the endpoint's health.
    let st = w.endpoint("a/x-up").await;
    assert_eq!(
        (&st["breaker"], &st["consecutive_failures"]),
        (&json!("closed"), &json!(0))
    );
}

// ---------- 5. model fallback ----------

/// Model `x` on `a` and `b`, falling back to `y` on `c`.
async fn fallback_world() -> World {
    World::start(
        &[
            prov("a", false, false),
            prov("b", false, false),
            prov("c", true, false),
        ],
        vec![
            model(
                "x",
                &["y"],
                vec![ep("a", "x-up", 0.1), ep("b", "x-up", 0.2)],
            ),
            model("y", &[], vec![ep("c", "y-up", 0.3)]),
        ],
        "",
        &Routing::default(),
    )
    .await
}

#[tokio::test]
async fn model_fallback_answers_when_every_endpoint_of_the_model_fails() {
    let w = fallback_world().await;
    for stream in [false, true] {
        w.all_ok(stream);
        w.fake("a").set_default(e500());
        w.fake("b")
            .set_default(Reply::error(503, json!({"error": {"message": "busy"}})));
        let body = req(
            "x",
            stream,
            json!({"preference": "cost", "include_metadata": true}),
        );
        let a = answer(w.send(&body).await, stream).await;
        assert_eq!(a.model, "y", "stream={stream}");
        assert_eq!(a.header("x-relais-model"), "y");
        assert_eq!(a.header("x-relais-model-fallback"), "true");
        assert_eq!(a.endpoint(), "c/y-up");
        assert_eq!(a.attempts(), "3");
        assert_eq!(a.text, "from c");
        let t = a.relais.unwrap();
        assert_eq!(t["models_considered"], json!(["x", "y"]));
        assert_eq!(t["answered_by_model"], "y");
        assert_eq!(t["candidates"][2]["is_fallback_model"], true);
        assert_eq!(
            w.fake("c").request_count_for("y-up"),
            w.fake("c").request_count()
        );

        // With model fallback disabled by the request, the client gets the error.
        let c_before = w.fake("c").request_count();
        let body = req(
            "x",
            stream,
            json!({"preference": "cost", "enable_model_fallback": false}),
        );
        let (status, _) = error_answer(w.send(&body).await).await;
        assert_eq!(
            status, 529,
            "the last failure (a 503) decides: stream={stream}"
        );
        assert_eq!(w.fake("c").request_count(), c_before, "y never asked");
    }
    assert_eq!(w.counts(), counts(&[("a", 4), ("b", 4), ("c", 2)]));
}

#[tokio::test]
async fn model_fallback_answers_when_the_request_filters_exclude_the_whole_model() {
    let w = fallback_world().await;
    for stream in [false, true] {
        w.all_ok(stream);
        // Only `c` is EU-native: x has nothing eligible, y does.
        let a = answer(
            w.send(&req("x", stream, json!({"eu_native": true}))).await,
            stream,
        )
        .await;
        assert_eq!((a.model.as_str(), a.endpoint()), ("y", "c/y-up"));
        assert_eq!(a.header("x-relais-model"), "y");
        assert_eq!(a.header("x-relais-model-fallback"), "true");
        assert_eq!(a.attempts(), "1");

        let body = req(
            "x",
            stream,
            json!({"eu_native": true, "enable_model_fallback": false}),
        );
        let msg = expect_error(w.send(&body).await, 400, "invalid_request_error").await;
        assert!(
            msg.contains("`a/x-up` of `x` removed by eu_native"),
            "{msg}"
        );
        assert!(
            msg.contains("`b/x-up` of `x` removed by eu_native"),
            "{msg}"
        );
    }
    assert_eq!(w.counts(), counts(&[("a", 0), ("b", 0), ("c", 2)]));
}

// ---------- 6. circuit breaker ----------

#[tokio::test]
async fn an_open_breaker_keeps_traffic_off_until_the_cooldown_then_one_probe() {
    const COOLDOWN: Duration = Duration::from_millis(600);
    let w = pair(Routing {
        breaker_failures: 2,
        breaker_cooldown_s: COOLDOWN.as_secs_f64(),
        ..Routing::default()
    })
    .await;
    w.all_ok(false);
    w.fake("a").set_default(e500());
    let body = req("x", false, json!({"preference": "cost"}));
    for _ in 0..2 {
        let a = answer(w.send(&body).await, false).await;
        assert_eq!((a.endpoint(), a.attempts()), ("b/x-up", "2"));
    }
    let opened = Instant::now();
    let st = w.endpoint("a/x-up").await;
    assert_eq!(st["breaker"], "open", "{st}");
    assert_eq!(st["consecutive_failures"], 2);

    // Open: `a` gets nothing, `b` answers at the first attempt.
    for _ in 0..3 {
        let a = answer(w.send(&body).await, false).await;
        assert_eq!((a.endpoint(), a.attempts()), ("b/x-up", "1"));
    }
    assert!(
        opened.elapsed() < COOLDOWN,
        "too slow to observe the open breaker"
    );
    assert_eq!(w.fake("a").request_count(), 2, "no traffic while open");

    // After the cool-down, concurrent requests: exactly one probes `a` (which fails slowly),
    // the others skip it.
    tokio::time::sleep(COOLDOWN.saturating_sub(opened.elapsed()) + Duration::from_millis(50)).await;
    w.fake("a")
        .set_default(Reply::Delayed(Duration::from_millis(300), Box::new(e500())));
    let sends: Vec<_> = (0..3).map(|_| w.send(&body)).collect();
    for resp in futures_util::future::join_all(sends).await {
        assert_eq!(answer(resp, false).await.endpoint(), "b/x-up");
    }
    assert_eq!(w.fake("a").request_count(), 3, "one probe, not more");
    // The failed probe reopened it.
    let st = w.endpoint("a/x-up").await;
    assert_eq!(st["breaker"], "open", "{st}");
    let a = answer(w.send(&body).await, false).await;
    assert_eq!((a.endpoint(), a.attempts()), ("b/x-up", "1"));
    assert_eq!(w.fake("a").request_count(), 3);

    // Next cool-down: a successful probe closes it and `a` has the traffic back.
    w.fake("a").set_default(ok("a", false));
    let t0 = Instant::now();
    while w.endpoint("a/x-up").await["open_for_ms"]
        .as_u64()
        .unwrap_or(0)
        > 0
    {
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "cool-down never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..2 {
        let a = answer(w.send(&body).await, false).await;
        assert_eq!((a.endpoint(), a.attempts()), ("a/x-up", "1"));
    }
    assert_eq!(w.endpoint("a/x-up").await["breaker"], "closed");
    assert_eq!(w.fake("a").request_count(), 5);
}

// ---------- 7. POST /v1/route ----------

#[tokio::test]
async fn route_returns_the_plan_without_calling_any_provider() {
    let w = World::start(
        &COMPLIANCE,
        compliance_models(&["y"]),
        "",
        &Routing::default(),
    )
    .await;
    let body = req("x", false, json!({"eu_native": true, "preference": "cost"}));
    let (status, _, plan) = json_of(w.relais.post_json("/v1/route", &body).await).await;
    assert_eq!(status, 200, "{plan}");
    let eps: Vec<&str> = plan["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["endpoint"].as_str().unwrap())
        .collect();
    assert_eq!(eps, ["eu/x-up", "euzdr/x-up", "eu/y-up", "euzdr/y-up"]);
    assert_eq!(plan["models_considered"], json!(["x", "y"]));
    let mut excluded: Vec<(String, String)> = plan["excluded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["endpoint"].as_str().unwrap().to_owned(),
                e["filter"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    excluded.sort();
    assert_eq!(
        excluded,
        [
            ("us/x-up", "eu_native"),
            ("us/y-up", "eu_native"),
            ("zdr/x-up", "eu_native"),
            ("zdr/y-up", "eu_native"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    assert_eq!(plan["attempts"], json!([]));
    assert!(plan.get("answered_by_endpoint").is_none(), "{plan}");

    // Nothing eligible: a 400 naming, for each endpoint, the filter that removed it.
    let body = req(
        "x",
        false,
        json!({"eu_native": true, "allowed_providers": ["zdr", "us"]}),
    );
    for path in ["/v1/route", "/v1/messages"] {
        let msg = expect_error(
            w.relais.post_json(path, &body).await,
            400,
            "invalid_request_error",
        )
        .await;
        for m in ["x", "y"] {
            for (e, f) in [
                ("euzdr", "allowed_providers"),
                ("eu", "allowed_providers"),
                ("zdr", "eu_native"),
                ("us", "eu_native"),
            ] {
                let want = format!("`{e}/{m}-up` of `{m}` removed by {f}");
                assert!(msg.contains(&want), "{path}: missing {want:?} in {msg}");
            }
        }
    }
    assert_eq!(
        w.counts(),
        counts(&[("euzdr", 0), ("eu", 0), ("zdr", 0), ("us", 0)])
    );
}
