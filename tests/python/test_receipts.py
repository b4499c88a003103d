"""Signed compliance receipts checked by implementations that are not Relais's: Ed25519 from
`cryptography` (OpenSSL) and RFC 8785 from `rfc8785`. Requests go through the official
`anthropic` and `openai` SDKs; the receipt is fetched, its signature verified against the
published JWKs, its digests recomputed, every field tampered with; a second key cannot read
it; `relais receipts export` and `relais receipts verify` from the binary."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import subprocess
import time

import anthropic
import httpx
import openai
import pytest
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from conftest import CLIENT_KEY, MODEL, relais_config
from fake_openai import DEFAULT_TEXT

OTHER_KEY = "sk-relais-pytest-other-key-89ab"


def b64url(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def jwk_thumbprint(jwk: dict) -> str:
    members = json.dumps({"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"]},
                         separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(members.encode()).digest()).rstrip(b"=").decode()


def verify(signed: dict, jwks: dict) -> None:
    """Raises InvalidSignature unless `signed` verifies with the key its `kid` names."""
    (jwk,) = [k for k in jwks["keys"] if k["kid"] == signed["kid"]]
    key = Ed25519PublicKey.from_public_bytes(b64url(jwk["x"]))
    key.verify(b64url(signed["signature"]), rfc8785.dumps(signed["receipt"]))


@pytest.fixture
def relais(start_relais, fake_openai, tmp_path):
    cfg = relais_config(fake_openai.base_url) + f"""
[[keys]]
name = "other"
key = "{OTHER_KEY}"
"""
    r = start_relais(cfg)
    r.config_path = tmp_path / "relais-0.toml"
    return r


def get_receipt(relais, rid: str, key: str) -> httpx.Response:
    return httpx.get(f"{relais.base_url}/relais/receipts/{rid}", headers={"x-api-key": key},
                     timeout=10)


def test_receipts_verify_independently_and_tampering_breaks_them(relais):
    jwks = httpx.get(f"{relais.base_url}/relais/receipts/keys", timeout=10).json()
    assert [k["kty"] for k in jwks["keys"]] == ["OKP"] and jwks["keys"][0]["crv"] == "Ed25519"
    # The kid is the RFC 7638 thumbprint: anyone can recompute it.
    assert jwks["keys"][0]["kid"] == jwk_thumbprint(jwks["keys"][0])

    a = anthropic.Anthropic(base_url=relais.base_url, api_key=CLIENT_KEY, max_retries=0)
    raw = a.messages.with_raw_response.create(
        model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "Say hi"}])
    msg = raw.parse()
    rid = raw.headers["x-relais-receipt"]
    o = openai.OpenAI(base_url=f"{relais.base_url}/v1", api_key=CLIENT_KEY, max_retries=0)
    with o.chat.completions.with_streaming_response.create(
            model=MODEL, max_tokens=50, stream=True,
            messages=[{"role": "user", "content": "Say hi"}]) as resp:
        stream_rid = resp.headers["x-relais-receipt"]
        streamed = "".join(c.choices[0].delta.content or "" for c in resp.parse() if c.choices)

    for receipt_id, text in [(rid, msg.content[0].text), (stream_rid, streamed)]:
        assert text == DEFAULT_TEXT
        r = get_receipt(relais, receipt_id, CLIENT_KEY)
        assert r.status_code == 200, r.text
        signed = r.json()
        rc = signed["receipt"]
        verify(signed, jwks)
        assert rc["receipt_id"] == receipt_id
        assert rc["key_name"] == "pytest"
        assert rc["answer_sha256"] == hashlib.sha256(text.encode()).hexdigest()
        assert rc["currency"] == "EUR" and isinstance(rc["cost_micros"], int)
        assert [a["provider"] for a in rc["attempts"]] == ["up"]
        # Integers only: any JSON library canonicalises it the same way.
        assert "." not in json.dumps(rc).replace(rc["time"], "")

        # Another key cannot read it (as if it did not exist).
        assert get_receipt(relais, receipt_id, OTHER_KEY).status_code == 404

        # Any change to any field, top level or in an attempt, breaks the signature.
        def tampered(path):
            t = copy.deepcopy(signed)
            obj = t["receipt"]
            for p in path[:-1]:
                obj = obj[p]
            v = obj[path[-1]]
            obj[path[-1]] = (not v if isinstance(v, bool) else v + 1 if isinstance(v, int)
                             else v + "x" if isinstance(v, str) else "x" if v is None
                             else [] if isinstance(v, list) else {**v, "x": 1})
            return t

        paths = [[k] for k in rc] + [["attempts", 0, k] for k in rc["attempts"][0]]
        assert len(paths) > 30
        for path in paths:
            with pytest.raises(InvalidSignature):
                verify(tampered(path), jwks)
        bad_sig = dict(signed, signature=base64.urlsafe_b64encode(bytes(64)).rstrip(b"=").decode())
        with pytest.raises(InvalidSignature):
            verify(bad_sig, jwks)


def test_export_and_offline_verify(relais, relais_bin, tmp_path):
    a = anthropic.Anthropic(base_url=relais.base_url, api_key=CLIENT_KEY, max_retries=0)
    ids = []
    for _ in range(3):
        raw = a.messages.with_raw_response.create(
            model=MODEL, max_tokens=20, messages=[{"role": "user", "content": "hi"}])
        ids.append(raw.headers["x-relais-receipt"])
    jwks = httpx.get(f"{relais.base_url}/relais/receipts/keys", timeout=10).json()
    cfg = str(relais.config_path)
    out = tmp_path / "receipts.jsonl"
    deadline = time.monotonic() + 10
    lines: list[dict] = []
    while time.monotonic() < deadline:  # the ledger writes within its flush interval
        subprocess.run([str(relais_bin), "receipts", "export", "--config", cfg, "--since", "1d",
                        "--output", str(out)], check=True, timeout=30, capture_output=True)
        lines = [json.loads(l) for l in out.read_text().splitlines()]
        if len(lines) >= 3:
            break
        time.sleep(0.2)
    assert [l["receipt"]["receipt_id"] for l in lines] == ids
    for line in lines:
        verify(line, jwks)
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(jwks))
    ok = subprocess.run([str(relais_bin), "receipts", "verify", str(out), "--keys", str(keys)],
                        capture_output=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert b"3 receipts verified" in ok.stdout
    lines[1]["receipt"]["model_served"] = "someone-else"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(l) + "\n" for l in lines))
    res = subprocess.run([str(relais_bin), "receipts", "verify", str(bad), "--keys", str(keys)],
                         capture_output=True, timeout=30)
    assert res.returncode != 0
    assert b"line 2" in res.stderr, res.stderr
