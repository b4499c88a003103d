//! `relais usage` shows the cached tokens the providers reported and what caching saved
//! (cache reads at the input price minus their cost, at the configured prices).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::fake_upstream::openai;
use common::*;
use serde_json::Value;

#[tokio::test]
async fn usage_shows_cache_reads_and_what_they_saved() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeUpstream::start().await;
    let mut answer = openai::chat_response("ok");
    // 1000 prompt tokens, 800 of them from the provider's cache.
    answer["usage"] = serde_json::json!({
        "prompt_tokens": 1000, "completion_tokens": 10, "total_tokens": 1010,
        "prompt_tokens_details": {"cached_tokens": 800}
    });
    fake.set_default(Reply::json(answer));
    let toml = format!(
        "{}price_input_per_mtok = 1000\nprice_cached_input_per_mtok = 100\n\
         price_output_per_mtok = 2000\n",
        config(&fake.base_url(), &Opts::default())
    );
    let path = dir.path().join("relais.toml");
    std::fs::write(&path, &toml).unwrap();
    let relais = Relais::start_cfg(validate_cfg(&toml, &[], Some(dir.path()))).await;
    for _ in 0..2 {
        let r = relais.messages(&simple_body("hello")).await;
        assert_eq!(r.status(), 200);
    }
    relais.stop().await;

    let usage = |json: bool| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_relais"));
        c.args(["usage", "--by", "provider", "--config"]).arg(&path);
        if json {
            c.arg("--json");
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let v: Value = serde_json::from_str(&usage(true)).unwrap();
    assert_eq!(v["data"][0]["cache_read_tokens"], 1600, "{v}");
    // 1600 cached tokens at (1000 - 100) EUR per Mtok.
    let saved = v["cache_saved_eur"].as_f64().unwrap();
    assert!((saved - 1.44).abs() < 1e-9, "{v}");
    let table = usage(false);
    assert!(
        table.contains("cache reads: 1600 input tokens; caching saved 1.440000 EUR"),
        "{table}"
    );
}
