#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use sha2::{Digest, Sha256};

const BASE: &str = r#"
[[keys]]
name = "dev"
key = "sk-relais-dev"

[providers.local]
api = "openai"
base_url = "http://127.0.0.1:8000/v1/"
eu_native = true

[[models]]
id = "m"
aliases = ["latest", "claude-*"]

[[models.endpoints]]
provider = "local"
upstream_model = "up"
"#;

fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::validate(raw, &|k| env.get(k).cloned())
}

fn err(text: &str) -> String {
    parse(text, &[]).unwrap_err().to_string()
}

#[test]
fn valid_config_resolves_ids_aliases_and_prefixes() {
    let c = parse(BASE, &[]).unwrap();
    assert_eq!(c.providers[0].base_url, "http://127.0.0.1:8000/v1");
    assert_eq!(c.model("m").unwrap().id, "m");
    assert_eq!(c.model("latest").unwrap().id, "m");
    assert_eq!(c.model("claude-sonnet-4-5").unwrap().id, "m");
    assert!(c.model("gpt-4").is_none());
    assert_eq!(c.models[0].endpoints[0].id, "local/up");
    assert_eq!(c.models[0].endpoints[0].quantization, "none");
    assert_eq!(
        c.keys[0].digest,
        <[u8; 32]>::from(Sha256::digest(b"sk-relais-dev"))
    );
}

#[test]
fn unknown_fields_are_rejected_with_their_name() {
    let e = err(&BASE.replace("eu_native = true", "eu_nativ = true"));
    assert!(e.contains("eu_nativ"), "{e}");
    let e = err(&format!(
        "{BASE}\n[server]\nlisten = \"127.0.0.1:1\"\nlistn = 3\n"
    ));
    assert!(e.contains("listn"), "{e}");
}

#[test]
fn errors_name_the_field() {
    let e = err(&BASE.replace("api = \"openai\"", "api = \"grpc\""));
    assert!(
        e.contains("providers.local.api") && e.contains("grpc"),
        "{e}"
    );
    let e = err(&BASE.replace("provider = \"local\"", "provider = \"nope\""));
    assert!(
        e.contains("models[0].endpoints[0].provider") && e.contains("nope"),
        "{e}"
    );
    let e = err(&BASE.replace("key = \"sk-relais-dev\"", "key = \"short\""));
    assert!(e.contains("keys[0].key"), "{e}");
    let e = err(&BASE.replace("aliases = [\"latest\", \"claude-*\"]", "aliases = [\"m\"]"));
    assert!(e.contains("models[0].aliases"), "{e}");
    let e = err(&BASE.replace(
        "aliases = [\"latest\", \"claude-*\"]",
        "fallbacks = [\"ghost\"]",
    ));
    assert!(
        e.contains("models[0].fallbacks") && e.contains("ghost"),
        "{e}"
    );
    let e = err(&format!("[server]\nlisten = \"localhost\"\n{BASE}"));
    assert!(e.contains("server.listen"), "{e}");
}

#[test]
fn provider_key_comes_from_env_and_is_never_printed() {
    let text = BASE.replace(
        "eu_native = true",
        "eu_native = true\napi_key_env = \"LOCAL_KEY\"",
    );
    let e = parse(&text, &[]).unwrap_err().to_string();
    assert!(e.contains("LOCAL_KEY"), "{e}");
    let c = parse(&text, &[("LOCAL_KEY", "sk-provider-secret")]).unwrap();
    let key = c.providers[0].api_key.as_ref().unwrap();
    assert_eq!(key.expose(), "sk-provider-secret");
    assert!(!format!("{c:?}").contains("sk-provider-secret"));
    assert!(!format!("{c:?}").contains("sk-relais-dev"));
}

#[test]
fn optional_provider_without_key_makes_its_models_unavailable() {
    let text = BASE.replace(
        "eu_native = true",
        "eu_native = true\napi_key_env = \"LOCAL_KEY\"\noptional = true",
    );
    let c = parse(&text, &[]).unwrap();
    assert!(c.providers.is_empty());
    assert!(c.model("m").is_none());
    assert!(c.unavailable_models["m"].contains("LOCAL_KEY"));
}

#[test]
fn key_forms_are_exclusive() {
    let e = err(&BASE.replace(
        "key = \"sk-relais-dev\"",
        "key = \"sk-relais-dev\"\nkey_sha256 = \"00\"",
    ));
    assert!(e.contains("exactly one"), "{e}");
    let digest = hex::encode(Sha256::digest(b"sk-hashed-key"));
    let c = parse(
        &BASE.replace(
            "key = \"sk-relais-dev\"",
            &format!("key_sha256 = \"{digest}\""),
        ),
        &[],
    )
    .unwrap();
    assert_eq!(hex::encode(c.keys[0].digest), digest);
}

#[test]
fn no_keys_on_a_public_address_is_refused() {
    let open = BASE.replace("[[keys]]\nname = \"dev\"\nkey = \"sk-relais-dev\"\n", "");
    assert!(
        parse(&open, &[]).is_ok(),
        "loopback without keys is allowed"
    );
    let e = err(&format!("[server]\nlisten = \"0.0.0.0:8080\"\n{open}"));
    assert!(e.contains("allow_unauthenticated"), "{e}");
    let ok = format!("[server]\nlisten = \"0.0.0.0:8080\"\nallow_unauthenticated = true\n{open}");
    assert!(parse(&ok, &[]).is_ok());
}

#[test]
fn shipped_configs_are_valid() {
    for file in ["relais.local.toml", "relais.example.toml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let text = std::fs::read_to_string(path).unwrap();
        parse(&text, &[]).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

#[test]
fn metrics_section_is_strict_and_defaults_to_enabled_behind_a_key() {
    let c = parse(BASE, &[]).unwrap();
    let m = &c.metrics;
    assert!(m.enabled && !m.public && !m.include_key_label && m.listen.is_none());
    let c = parse(
        &format!("{BASE}\n[metrics]\nlisten = \"127.0.0.1:9464\"\npublic = true\n"),
        &[],
    )
    .unwrap();
    assert_eq!(c.metrics.listen, Some("127.0.0.1:9464".parse().unwrap()));
    assert!(c.metrics.public);
    let e = err(&format!("{BASE}\n[metrics]\nenable = false\n"));
    assert!(e.contains("enable"), "{e}");
    let e = err(&format!("{BASE}\n[metrics]\nlisten = \"9464\"\n"));
    assert!(e.contains("metrics.listen"), "{e}");
}
