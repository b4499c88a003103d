//! Ed25519 signatures over a receipt's canonical JSON, and the public keys as JWKs
//! (RFC 8037). A key's id is its RFC 7638 JWK thumbprint, so anyone can recompute it from
//! the published key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("a stored receipt signing key is not 32 bytes of base64url")]
    BadSecret,
    #[error("not a valid Ed25519 public key JWK: {0}")]
    BadJwk(&'static str),
}

/// A signing key and its id.
pub struct ReceiptKey {
    pub kid: String,
    signing: SigningKey,
}

/// A public key as published at `GET /relais/receipts/keys`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub kid: String,
}

/// `{"keys": [...]}`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

impl ReceiptKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> ReceiptKey {
        let secret: [u8; 32] = rand::random();
        ReceiptKey::from_secret(secret)
    }

    pub fn from_secret(secret: [u8; 32]) -> ReceiptKey {
        let signing = SigningKey::from_bytes(&secret);
        ReceiptKey {
            kid: kid_of(&signing.verifying_key()),
            signing,
        }
    }

    /// The secret as stored (base64url).
    pub fn secret_b64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.signing.to_bytes())
    }

    pub fn from_secret_b64(s: &str) -> Result<ReceiptKey, KeyError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(s.trim())
            .map_err(|_| KeyError::BadSecret)?;
        let secret: [u8; 32] = bytes.try_into().map_err(|_| KeyError::BadSecret)?;
        Ok(ReceiptKey::from_secret(secret))
    }

    /// The signature of `canonical` (a receipt's RFC 8785 bytes), base64url.
    pub fn sign(&self, canonical: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(self.signing.sign(canonical).to_bytes())
    }

    pub fn jwk(&self) -> Jwk {
        jwk_of(&self.signing.verifying_key())
    }
}

fn jwk_of(vk: &VerifyingKey) -> Jwk {
    Jwk {
        kty: "OKP".into(),
        crv: "Ed25519".into(),
        x: URL_SAFE_NO_PAD.encode(vk.as_bytes()),
        kid: kid_of(vk),
    }
}

/// RFC 7638: SHA-256 of the required members in lexicographic order, base64url.
fn kid_of(vk: &VerifyingKey) -> String {
    let x = URL_SAFE_NO_PAD.encode(vk.as_bytes());
    let members = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(members.as_bytes()))
}

impl Jwk {
    fn verifying_key(&self) -> Result<VerifyingKey, KeyError> {
        if self.kty != "OKP" || self.crv != "Ed25519" {
            return Err(KeyError::BadJwk("kty must be OKP and crv Ed25519"));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(&self.x)
            .map_err(|_| KeyError::BadJwk("x is not base64url"))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::BadJwk("x is not 32 bytes"))?;
        VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::BadJwk("x is not a curve point"))
    }
}

/// Why a receipt did not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("no published key has id `{0}`")]
    UnknownKid(String),
    #[error("the key with id `{0}` is not a valid Ed25519 key")]
    BadKey(String),
    #[error("the signature is not 64 bytes of base64url")]
    BadSignature,
    #[error("the signature does not match the receipt")]
    Mismatch,
}

impl JwkSet {
    /// Checks `signature` over `canonical` with the key named `kid`.
    pub fn verify(&self, kid: &str, canonical: &[u8], signature: &str) -> Result<(), VerifyError> {
        let jwk = self
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or_else(|| VerifyError::UnknownKid(kid.to_owned()))?;
        let vk = jwk
            .verifying_key()
            .map_err(|_| VerifyError::BadKey(kid.to_owned()))?;
        let sig = URL_SAFE_NO_PAD
            .decode(signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .ok_or(VerifyError::BadSignature)?;
        vk.verify(canonical, &Signature::from_bytes(&sig))
            .map_err(|_| VerifyError::Mismatch)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// RFC 8032 §7.1, test 1: the empty message.
    #[test]
    fn rfc8032_test_vector() {
        let secret =
            hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .unwrap();
        let k = ReceiptKey::from_secret(secret.try_into().unwrap());
        let sig = URL_SAFE_NO_PAD.decode(k.sign(b"")).unwrap();
        assert_eq!(
            hex::encode(sig),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
        assert_eq!(
            hex::encode(URL_SAFE_NO_PAD.decode(k.jwk().x).unwrap()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
    }

    #[test]
    fn a_signature_verifies_with_its_key_only_and_only_for_its_bytes() {
        let (a, b) = (ReceiptKey::generate(), ReceiptKey::generate());
        let set = JwkSet {
            keys: vec![a.jwk(), b.jwk()],
        };
        let sig = a.sign(b"{\"a\":1}");
        assert_eq!(set.verify(&a.kid, b"{\"a\":1}", &sig), Ok(()));
        assert_eq!(
            set.verify(&a.kid, b"{\"a\":2}", &sig),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            set.verify(&b.kid, b"{\"a\":1}", &sig),
            Err(VerifyError::Mismatch)
        );
        assert!(matches!(
            set.verify("nope", b"", &sig),
            Err(VerifyError::UnknownKid(_))
        ));
        let again = ReceiptKey::from_secret_b64(&a.secret_b64()).unwrap();
        assert_eq!(again.kid, a.kid);
    }
}
