#![allow(clippy::unwrap_used)] // A test that cannot set up should fail loudly, right there.

use serde_json::json;

use super::*;
use crate::admin::test_support::{AUDIENCE, ISSUER, TestKey, claims, jwks, now_plus, token_entry};
use hoop_config::OidcConfig;

fn oidc_config(jwks_file: Option<PathBuf>, jwks_url: Option<String>) -> OidcConfig {
    OidcConfig {
        issuer: ISSUER.to_owned(),
        audience: AUDIENCE.to_owned(),
        jwks_file,
        jwks_url,
        groups_claim: "groups".to_owned(),
        client_id: None,
        scopes: vec!["openid".to_owned()],
    }
}

async fn verifier_for(keys: &[&TestKey]) -> (OidcVerifier, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(keys)).unwrap();
    (
        OidcVerifier::new(&oidc_config(Some(path), None))
            .await
            .unwrap(),
        dir,
    )
}

#[tokio::test]
async fn static_tokens_are_matched_by_hash() {
    let yaml =
        token_entry("s3cret-alice", "alice", &["dba"]) + &token_entry("s3cret-bob", "bob", &[]);
    let auth = Authenticator::new(parse_tokens(&yaml, "test").unwrap(), None);
    let alice = auth.authenticate("s3cret-alice").await.unwrap();
    assert_eq!(
        alice,
        Decider {
            identity: "alice".to_owned(),
            groups: vec!["dba".to_owned()]
        }
    );
    assert_eq!(
        auth.authenticate("s3cret-bob").await.unwrap().identity,
        "bob"
    );
    assert!(matches!(
        auth.authenticate("s3cret-eve").await,
        Err(AuthError::UnknownToken)
    ));
    assert!(matches!(
        auth.authenticate("").await,
        Err(AuthError::MissingToken)
    ));
}

#[tokio::test]
async fn nothing_configured_refuses_everyone() {
    let auth = Authenticator::default();
    assert!(!auth.is_configured());
    assert!(matches!(
        auth.authenticate("anything").await,
        Err(AuthError::NotConfigured)
    ));
}

#[test]
fn token_lists_are_strict() {
    let bad_hash = "- token_sha256: abc\n  identity: alice\n";
    assert!(matches!(
        parse_tokens(bad_hash, "t"),
        Err(AuthConfigError::InvalidTokenHash { index: 0, .. })
    ));
    // A plaintext token is not a key hoop knows: secrets never sit in the file.
    let plaintext = "- token: hunter2\n  identity: alice\n";
    assert!(matches!(
        parse_tokens(plaintext, "t"),
        Err(AuthConfigError::ParseTokens { .. })
    ));
    let no_identity = format!("- token_sha256: {}\n  identity: ' '\n", "a".repeat(64));
    assert!(matches!(
        parse_tokens(&no_identity, "t"),
        Err(AuthConfigError::EmptyIdentity { .. })
    ));
    let twice = token_entry("same", "alice", &[]) + &token_entry("same", "bob", &[]);
    let tokens = parse_tokens(&twice, "t").unwrap();
    assert!(matches!(
        check_unique(&tokens),
        Err(AuthConfigError::DuplicateToken { index: 1, .. })
    ));
    assert!(parse_tokens("", "t").unwrap().is_empty());
}

#[tokio::test]
async fn tokens_env_is_read_and_required() {
    let mut admin = hoop_config::AdminConfig {
        tokens_env: Some("HOOP_ADMIN_TOKENS".to_owned()),
        ..Default::default()
    };
    let unset = Authenticator::from_config_with_env(&admin, |_| None).await;
    assert!(matches!(
        unset,
        Err(AuthConfigError::TokensEnvMissing { .. })
    ));
    let yaml = token_entry("from-env", "carol", &["dba"]);
    let env = |var: &str| (var == "HOOP_ADMIN_TOKENS").then(|| yaml.clone());
    let auth = Authenticator::from_config_with_env(&admin, env)
        .await
        .unwrap();
    assert_eq!(
        auth.authenticate("from-env").await.unwrap().identity,
        "carol"
    );
    admin.tokens_env = None;
    assert!(
        !Authenticator::from_config(&admin)
            .await
            .unwrap()
            .is_configured()
    );
}

#[tokio::test]
async fn es256_token_is_accepted_with_email_and_groups() {
    let key = TestKey::es256("ec-1");
    let (verifier, _dir) = verifier_for(&[&key]).await;
    let decider = verifier
        .verify(&key.sign(&claims("alice@example.com", &["dba", "oncall"])))
        .await
        .unwrap();
    assert_eq!(decider.identity, "alice@example.com");
    assert_eq!(decider.groups, ["dba", "oncall"]);
}

#[tokio::test]
async fn rs256_token_is_accepted() {
    let key = TestKey::rs256("rsa-1");
    let (verifier, _dir) = verifier_for(&[&key]).await;
    let decider = verifier
        .verify(&key.sign(&claims("bob@example.com", &["dba"])))
        .await
        .unwrap();
    assert_eq!(decider.identity, "bob@example.com");
}

#[tokio::test]
async fn expired_not_yet_valid_wrong_audience_and_wrong_issuer_are_refused() {
    let key = TestKey::es256("ec-1");
    let (verifier, _dir) = verifier_for(&[&key]).await;
    let mut expired = claims("alice@example.com", &["dba"]);
    expired["exp"] = json!(now_plus(-120));
    let mut early = claims("alice@example.com", &["dba"]);
    early["nbf"] = json!(now_plus(600));
    let mut audience = claims("alice@example.com", &["dba"]);
    audience["aud"] = json!("someone-else");
    let mut issuer = claims("alice@example.com", &["dba"]);
    issuer["iss"] = json!("https://evil.example.test");
    let mut no_exp = claims("alice@example.com", &["dba"]);
    no_exp.as_object_mut().unwrap().remove("exp");
    for (what, claims) in [
        ("expired", expired),
        ("not yet valid", early),
        ("wrong audience", audience),
        ("wrong issuer", issuer),
        ("no exp", no_exp),
    ] {
        let result = verifier.verify(&key.sign(&claims)).await;
        assert!(
            matches!(result, Err(AuthError::InvalidJwt(_))),
            "{what}: {result:?}"
        );
    }
}

#[tokio::test]
async fn a_forged_signature_or_hmac_token_is_refused() {
    let key = TestKey::es256("ec-1");
    let impostor = TestKey::es256("ec-1");
    let (verifier, _dir) = verifier_for(&[&key]).await;
    let forged = verifier
        .verify(&impostor.sign(&claims("alice@example.com", &["dba"])))
        .await;
    assert!(
        matches!(forged, Err(AuthError::InvalidJwt(_))),
        "{forged:?}"
    );

    let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
    header.kid = Some("ec-1".to_owned());
    let hmac = jsonwebtoken::encode(
        &header,
        &claims("alice@example.com", &["dba"]),
        &jsonwebtoken::EncodingKey::from_secret(b"public key bytes"),
    )
    .unwrap();
    assert!(matches!(
        verifier.verify(&hmac).await,
        Err(AuthError::UnsupportedAlgorithm(Algorithm::HS256))
    ));
}

#[tokio::test]
async fn groups_may_be_a_space_separated_string_or_nested() {
    let key = TestKey::es256("ec-1");
    let (verifier, _dir) = verifier_for(&[&key]).await;
    let mut spaced = claims("alice@example.com", &[]);
    spaced["groups"] = json!("dba  oncall");
    assert_eq!(
        verifier.verify(&key.sign(&spaced)).await.unwrap().groups,
        ["dba", "oncall"]
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(&[&key])).unwrap();
    let mut config = oidc_config(Some(path), None);
    config.groups_claim = "realm_access.roles".to_owned();
    let nested_verifier = OidcVerifier::new(&config).await.unwrap();
    let mut nested = claims("alice@example.com", &[]);
    nested["realm_access"] = json!({ "roles": ["dba"] });
    assert_eq!(
        nested_verifier
            .verify(&key.sign(&nested))
            .await
            .unwrap()
            .groups,
        ["dba"]
    );
}

#[tokio::test]
async fn unverified_email_falls_back_to_sub() {
    let key = TestKey::es256("ec-1");
    let (verifier, _dir) = verifier_for(&[&key]).await;
    let mut unverified = claims("alice@example.com", &["dba"]);
    unverified["email_verified"] = json!(false);
    assert_eq!(
        verifier
            .verify(&key.sign(&unverified))
            .await
            .unwrap()
            .identity,
        "sub-alice@example.com"
    );
}

#[tokio::test]
async fn an_unknown_kid_reloads_the_jwks_at_most_once_per_interval() {
    let old = TestKey::es256("old");
    let rotated = TestKey::es256("rotated");
    let later = TestKey::es256("later");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(&[&old])).unwrap();
    let verifier = OidcVerifier::new(&oidc_config(Some(path.clone()), None))
        .await
        .unwrap();

    std::fs::write(&path, jwks(&[&old, &rotated])).unwrap();
    let decider = verifier
        .verify(&rotated.sign(&claims("alice@example.com", &["dba"])))
        .await
        .unwrap();
    assert_eq!(decider.identity, "alice@example.com");

    std::fs::write(&path, jwks(&[&old, &rotated, &later])).unwrap();
    let too_soon = verifier
        .verify(&later.sign(&claims("alice@example.com", &["dba"])))
        .await;
    assert!(
        matches!(too_soon, Err(AuthError::UnknownKey { .. })),
        "{too_soon:?}"
    );
}

#[tokio::test]
async fn jwks_is_fetched_from_a_url() {
    let key = TestKey::es256("served");
    let document = jwks(&[&key]);
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || async move { document }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let url = format!("http://{addr}/.well-known/jwks.json");
    let verifier = OidcVerifier::new(&oidc_config(None, Some(url)))
        .await
        .unwrap();
    let decider = verifier
        .verify(&key.sign(&claims("alice@example.com", &["dba"])))
        .await
        .unwrap();
    assert_eq!(decider.identity, "alice@example.com");
}

#[tokio::test]
async fn jwks_source_must_be_exactly_one() {
    assert!(matches!(
        OidcVerifier::new(&oidc_config(None, None)).await,
        Err(AuthConfigError::JwksSource)
    ));
    let both = oidc_config(
        Some(PathBuf::from("/x")),
        Some("http://127.0.0.1:1/".to_owned()),
    );
    assert!(matches!(
        OidcVerifier::new(&both).await,
        Err(AuthConfigError::JwksSource)
    ));
    let missing = oidc_config(Some(PathBuf::from("/nonexistent/jwks.json")), None);
    assert!(matches!(
        OidcVerifier::new(&missing).await,
        Err(AuthConfigError::ReadJwks { .. })
    ));
}

#[test]
fn symmetric_and_encryption_keys_are_skipped() {
    let key = TestKey::es256("ec-1");
    let mut encryption = key.jwk.clone();
    encryption["use"] = json!("enc");
    encryption["kid"] = json!("enc-1");
    let document = json!({ "keys": [
        { "kty": "oct", "k": "c2VjcmV0", "kid": "hmac" },
        encryption,
        { "kty": "weird" },
        key.jwk,
    ]})
    .to_string();
    let keys = parse_jwks(&document, "test").unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].kid.as_deref(), Some("ec-1"));
}
