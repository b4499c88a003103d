//! The routing scenario world: several fake upstreams, one per provider (each with its own
//! compliance flags, prices and scripted replies), and Relais started in front of them with
//! a catalog built from `prov`/`model`/`ep` and a `[routing]` from `Routing`; plus the
//! request and answer helpers the `routing_*` tests share.
//!
//! Determinism: exploration and near-equal load sharing are off unless a test says
//! otherwise, and the compliant endpoints are made the *least* attractive ones, so that a
//! leak would be the router's first choice, not an accident of ordering.

use std::collections::BTreeMap;

use serde_json::{json, Value};

pub use super::doors::{Answer, Door};
use super::fake_upstream::openai;
use super::*;

/// A provider: its name and compliance flags. Each gets its own fake upstream.
#[derive(Clone, Copy)]
pub struct P {
    pub name: &'static str,
    pub eu: bool,
    pub zdr: bool,
    /// Speaks the Anthropic Messages API instead of OpenAI chat completions.
    pub anthropic: bool,
}

pub const fn prov(name: &'static str, eu: bool, zdr: bool) -> P {
    P {
        name,
        eu,
        zdr,
        anthropic: false,
    }
}

/// A provider with an Anthropic-native API.
pub const fn prov_anthropic(name: &'static str, eu: bool, zdr: bool) -> P {
    P {
        name,
        eu,
        zdr,
        anthropic: true,
    }
}

/// An endpoint of a model: provider, upstream model, price (EUR per Mtok, input and output
/// alike) and any other TOML lines (priors, limits).
pub struct E {
    pub provider: &'static str,
    pub upstream: &'static str,
    pub price: f64,
    pub extra: String,
}

pub fn ep(provider: &'static str, upstream: &'static str, price: f64) -> E {
    E {
        provider,
        upstream,
        price,
        extra: String::new(),
    }
}

impl E {
    pub fn with(mut self, toml: &str) -> E {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }
}

pub struct M {
    pub id: &'static str,
    pub fallbacks: &'static [&'static str],
    pub endpoints: Vec<E>,
}

pub fn model(id: &'static str, fallbacks: &'static [&'static str], endpoints: Vec<E>) -> M {
    M {
        id,
        fallbacks,
        endpoints,
    }
}

/// `[routing]` of a scenario. Defaults: no exploration and no near-equal sharing (both
/// random: scenarios assert exact orders; exploration has tests of its own), the shipped
/// breaker (`None`: Relais's own defaults, 3 failures, 30 s), four attempts.
#[derive(Clone)]
pub struct Routing {
    pub total_timeout_s: f64,
    pub max_attempts: u32,
    pub breaker_failures: Option<u32>,
    pub breaker_cooldown_s: Option<f64>,
    pub explore_probability: f64,
    pub near_equal_margin: f64,
    pub first_byte_timeout_s: f64,
    pub request_timeout_s: f64,
    /// Lines of `[routing.hedge]` (empty: the shipped hedging).
    pub hedge: &'static str,
}

impl Default for Routing {
    fn default() -> Self {
        Routing {
            total_timeout_s: 10.0,
            max_attempts: 4,
            breaker_failures: None,
            breaker_cooldown_s: None,
            explore_probability: 0.0,
            near_equal_margin: 0.0,
            first_byte_timeout_s: 0.3,
            request_timeout_s: 0.5,
            hedge: "",
        }
    }
}

pub struct World {
    pub relais: Relais,
    pub fakes: BTreeMap<&'static str, FakeUpstream>,
    /// The providers that speak the Anthropic API.
    pub anthropic: Vec<&'static str>,
}

impl World {
    /// Starts one fake per provider (each answering "from <provider>" until scripted
    /// otherwise) and Relais with this catalog. `keys` are extra `[[keys]]` tables.
    pub async fn start(providers: &[P], models: Vec<M>, keys: &str, r: &Routing) -> World {
        let mut fakes = BTreeMap::new();
        for p in providers {
            let f = FakeUpstream::start().await;
            f.set_default(ok_as(p.name, p.anthropic, false));
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
{}{}explore_probability = {}
near_equal_margin = {}

[routing.hedge]
{}

[[keys]]
name = "test"
roles = ["metrics"]
key = "{CLIENT_KEY}"
{keys}
"#,
            r.total_timeout_s,
            r.max_attempts,
            r.breaker_failures
                .map(|n| format!("breaker_failures = {n}\n"))
                .unwrap_or_default(),
            r.breaker_cooldown_s
                .map(|s| format!("breaker_cooldown_s = {s}\n"))
                .unwrap_or_default(),
            r.explore_probability,
            r.near_equal_margin,
            r.hedge,
        );
        for p in providers {
            toml.push_str(&format!(
                r#"
[providers.{name}]
api = "{api}"
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
                api = if p.anthropic { "anthropic" } else { "openai" },
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
            anthropic: providers
                .iter()
                .filter(|p| p.anthropic)
                .map(|p| p.name)
                .collect(),
        }
    }

    pub fn fake(&self, name: &str) -> &FakeUpstream {
        &self.fakes[name]
    }

    /// Requests each provider received so far.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        self.fakes
            .iter()
            .map(|(n, f)| (*n, f.request_count()))
            .collect()
    }

    /// Every provider answers normally again (JSON or SSE).
    pub fn all_ok(&self, stream: bool) {
        for (n, f) in &self.fakes {
            f.set_default(self.ok(n, stream));
        }
    }

    /// A normal answer from provider `name`, in its API.
    pub fn ok(&self, name: &str, stream: bool) -> Reply {
        ok_as(name, self.anthropic.contains(&name), stream)
    }

    pub async fn send(&self, body: &Value) -> reqwest::Response {
        self.relais.messages(body).await
    }

    /// Sends `body` through `door` with the standard client key.
    pub async fn send_via(&self, door: Door, body: &Value) -> reqwest::Response {
        door.send(&self.relais, body).await
    }

    /// One endpoint's live state from `GET /relais/endpoints`.
    pub async fn endpoint(&self, id: &str) -> Value {
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

pub fn counts(pairs: &[(&'static str, usize)]) -> BTreeMap<&'static str, usize> {
    pairs.iter().copied().collect()
}

/// A normal answer saying which provider gave it, in its API.
pub fn ok_as(provider: &str, anthropic: bool, stream: bool) -> Reply {
    use super::fake_upstream::anthropic as a;
    if !anthropic {
        return ok(provider, stream);
    }
    let text = format!("from {provider}");
    if stream {
        Reply::sse(a::text_stream("upstream", &["from ", provider]))
    } else {
        Reply::json(a::message("upstream", &text))
    }
}

/// A normal answer saying which provider gave it: a chat completion, or a complete stream.
pub fn ok(provider: &str, stream: bool) -> Reply {
    let text = format!("from {provider}");
    if stream {
        Reply::sse(openai::text_stream(&["from ", provider]))
    } else {
        Reply::json(openai::chat_response(&text))
    }
}

pub fn e500() -> Reply {
    Reply::error(
        500,
        json!({"error": {"message": "internal failure", "type": "server_error"}}),
    )
}

/// `a` is cheaper, so under `preference: cost` it is always tried first; `b` answers.
pub async fn pair(r: Routing) -> World {
    pair_of(r, false).await
}

/// [`pair`], with `b` speaking the Anthropic API when `b_anthropic` (so that fallback
/// crosses from a relayed or translated OpenAI answer to a translated Anthropic one).
pub async fn pair_of(r: Routing, b_anthropic: bool) -> World {
    let b = if b_anthropic {
        prov_anthropic("b", false, false)
    } else {
        prov("b", false, false)
    };
    World::start(
        &[prov("a", false, false), b],
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

/// A Messages body for `model` with the router fields of `fields` merged in.
pub fn req(model: &str, stream: bool, fields: Value) -> Value {
    Door::Messages.req(model, stream, fields)
}

/// Asserts a 200 with one clean Messages answer: a full message, or a stream with the
/// complete event sequence (message_start … message_stop) and no error event.
pub async fn answer(resp: reqwest::Response, stream: bool) -> Answer {
    Door::Messages.answer(resp, stream).await
}

/// Asserts an error answer (4xx/5xx, Anthropic envelope); returns status and message.
pub async fn error_answer(resp: reqwest::Response) -> (u16, String) {
    let e = Door::Messages.error(resp).await;
    (e.status, e.message)
}

// ---------- the compliance catalog (also used by the /v1/route tests) ----------

/// eu+zdr, eu-only, zdr-only (not EU) and neither. The non-compliant ones are the cheapest,
/// so `preference: cost` would pick them first if a filter let them through.
pub const COMPLIANCE: [P; 4] = [
    prov("euzdr", true, true),
    prov("eu", true, false),
    prov("zdr", false, true),
    prov("us", false, false),
];

/// [`COMPLIANCE`] with the EU-only provider speaking the Anthropic API.
pub const MIXED: [P; 4] = [
    prov("euzdr", true, true),
    prov_anthropic("eu", true, false),
    prov("zdr", false, true),
    prov("us", false, false),
];

pub fn compliance_models(fallbacks: &'static [&'static str]) -> Vec<M> {
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
