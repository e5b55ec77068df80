//! An external token issuer (a company IdP, CI OIDC): an ES256 key, its JWKS document, and
//! tokens signed with whatever claims, header and key a test needs (expired, wrong audience,
//! forged, `alg: none`).

use anyhow::Context;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// One signing key of a test issuer.
pub struct TestIdp {
    pub issuer: String,
    pub kid: String,
    key: EcdsaKeyPair,
}

impl TestIdp {
    pub fn new(issuer: &str, kid: &str) -> anyhow::Result<TestIdp> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|e| anyhow::anyhow!("generating a key: {e}"))?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .map_err(|e| anyhow::anyhow!("loading the key: {e}"))?;
        Ok(TestIdp {
            issuer: issuer.to_string(),
            kid: kid.to_string(),
            key,
        })
    }

    /// The JWKS document holding this key's public half.
    pub fn jwks(&self) -> Value {
        // Uncompressed point: 0x04 || x (32 bytes) || y (32 bytes).
        let point = self.key.public_key().as_ref();
        json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }]})
    }

    /// A token for `sub` with `groups`, for `audience`, valid for `ttl_secs` (negative:
    /// already expired), with the claim `tenant = "acme"`.
    pub fn token(&self, sub: &str, groups: &[&str], audience: &str, ttl_secs: i64) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        self.sign(
            &json!({"alg": "ES256", "typ": "JWT", "kid": self.kid}),
            &json!({
                "iss": self.issuer, "sub": sub, "aud": audience, "groups": groups,
                "iat": now, "nbf": now - 5, "exp": now + ttl_secs, "tenant": "acme",
            }),
        )
    }

    /// Sign any header and claims with this key.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .context("ES256 signing")
            .map(|s| URL_SAFE_NO_PAD.encode(s.as_ref()))
            .unwrap_or_default();
        format!("{input}.{signature}")
    }

    /// The same claims with `alg: none` and no signature.
    pub fn unsigned(&self, claims: &Value) -> String {
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }
}
