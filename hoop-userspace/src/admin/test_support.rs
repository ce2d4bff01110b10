//! Test keys, JWTs and JWKS documents for the admin API tests.
//!
//! Keys are generated per test run: ES256 with ring, RS256 with the `openssl`
//! command (ring cannot generate RSA keys).
#![allow(clippy::unwrap_used)] // A test that cannot set up should fail loudly, right there.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::{
    rand::SystemRandom,
    signature::{self, EcdsaKeyPair, KeyPair as _},
};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

pub(crate) const ISSUER: &str = "https://idp.example.test";
pub(crate) const AUDIENCE: &str = "hoop-admin";

/// A signing key and its public JWK.
pub(crate) struct TestKey {
    pub(crate) kid: String,
    pub(crate) alg: Algorithm,
    encoding: EncodingKey,
    pub(crate) jwk: Value,
}

impl TestKey {
    /// A fresh P-256 key.
    pub(crate) fn es256(kid: &str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .unwrap();
        // Uncompressed point: 0x04 || X || Y.
        let point = pair.public_key().as_ref();
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        Self {
            kid: kid.to_owned(),
            alg: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk,
        }
    }

    /// A fresh 2048-bit RSA key (needs the `openssl` command).
    pub(crate) fn rs256(kid: &str) -> Self {
        let generated = std::process::Command::new("openssl")
            .args(["genrsa", "-traditional", "2048"])
            .output()
            .expect("the RS256 test needs the openssl command");
        assert!(generated.status.success(), "openssl genrsa failed");
        let mut convert = std::process::Command::new("openssl")
            .args(["rsa", "-traditional", "-outform", "DER"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut convert.stdin.take().unwrap(), &generated.stdout).unwrap();
        let der = convert.wait_with_output().unwrap().stdout;
        let pair = signature::RsaKeyPair::from_der(&der).expect("PKCS#1 RSA key");
        let public = signature::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
        let jwk = json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(&public.n),
            "e": URL_SAFE_NO_PAD.encode(&public.e),
        });
        Self {
            kid: kid.to_owned(),
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(&der),
            jwk,
        }
    }

    /// A JWT over `claims`, with this key's `kid`.
    pub(crate) fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// A JWKS document holding `keys`.
pub(crate) fn jwks(keys: &[&TestKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
}

/// Seconds since the epoch, shifted by `offset`.
pub(crate) fn now_plus(offset: i64) -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp() + offset
}

/// Valid claims for `email` in `groups`, expiring in 5 minutes.
pub(crate) fn claims(email: &str, groups: &[&str]) -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": format!("sub-{email}"),
        "email": email,
        "groups": groups,
        "iat": now_plus(0),
        "exp": now_plus(300),
    })
}

/// A token-list YAML entry for `token`.
pub(crate) fn token_entry(token: &str, identity: &str, groups: &[&str]) -> String {
    format!(
        "- token_sha256: {}\n  identity: {identity}\n  groups: [{}]\n",
        hex::encode(Sha256::digest(token.as_bytes())),
        groups.join(", ")
    )
}
