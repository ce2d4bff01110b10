//! Who is calling the admin API: static bearer tokens and OIDC JWTs.
//!
//! - **Static tokens** come from `admin.tokens_file` and/or the environment
//!   variable named by `admin.tokens_env`, both a YAML list of
//!   `{token_sha256, identity, groups}`. Only the SHA-256 of a token is ever
//!   configured; a presented token is hashed and compared in constant time.
//! - **OIDC**: a JWT signed by a key of the issuer's JWKS (`jwks_file`, or
//!   `jwks_url` fetched at start and again, at most every 30 s, when a token
//!   names an unknown `kid`), with matching `iss` and `aud`, unexpired and
//!   already valid (`exp`, `nbf`, 30 s leeway). Asymmetric algorithms only
//!   (RS*, PS*, ES256, ES384, EdDSA): an `HS*` token is refused, so a public
//!   key can never be used as an HMAC secret. The identity is the `email`
//!   claim (unless `email_verified` is `false`), otherwise `sub`;
//!   `preferred_username` is not used because the issuer does not guarantee
//!   it is unique or stable. Groups come from `groups_claim` (an array of
//!   strings, or one space-separated string; a dotted path such as
//!   `realm_access.roles` reaches into nested objects).
//!
//! - **ID tokens of the approvals page**: with `admin.oidc.client_id` set, a
//!   token whose `aud` is that client id passes too (the ID tokens the
//!   issuer made for hoop's own page, as Kubernetes' `--oidc-client-id`).
//! - **Slack**: a button click is signed by Slack, and its user id maps to an
//!   identity through `admin.slack.users`; the groups are those given there,
//!   or else those of the identity's static tokens (see [`super::slack`]).
//!
//! With neither tokens nor OIDC configured, nobody is authenticated: the
//! holds API answers 401 to everyone (fail closed).

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use hyper::Method;
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse},
};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use super::{
    login::OidcLogin,
    outbound::{self, OutboundError, OutboundRequest},
    slack::{SlackAuth, SlackConfigError},
};
use hoop_config::{AdminConfig, OidcConfig};
use hoop_hold::Decider;

/// Least time between two JWKS refetches triggered by unknown `kid`s.
const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// Bound on one JWKS fetch.
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest JWKS document accepted.
const JWKS_MAX_BYTES: usize = 1024 * 1024;
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const JWT_LEEWAY_SECS: u64 = 30;

/// Why a presented credential was not accepted. Every variant means 401.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer …` header.
    #[error("missing bearer token (send `Authorization: Bearer <token>`)")]
    MissingToken,
    /// No tokens and no OIDC are configured, so nobody can be authenticated.
    #[error(
        "the admin API has no authentication configured (set admin.tokens_file, admin.tokens_env or admin.oidc)"
    )]
    NotConfigured,
    /// The token is neither a known static token nor a JWT.
    #[error("unknown token")]
    UnknownToken,
    /// The JWT's `alg` is not an accepted asymmetric algorithm.
    #[error("token algorithm {0:?} is not accepted")]
    UnsupportedAlgorithm(Algorithm),
    /// No key in the issuer's JWKS matches the token's `kid` and `alg`.
    #[error("no signing key {} in the issuer's JWKS", kid.as_deref().unwrap_or("(no kid)"))]
    UnknownKey {
        /// The token's `kid`.
        kid: Option<String>,
    },
    /// The JWT failed verification: signature, `iss`, `aud`, `exp`, `nbf`, or its shape.
    #[error("invalid token: {0}")]
    InvalidJwt(#[source] jsonwebtoken::errors::Error),
    /// The JWT has neither a usable `email` nor a `sub`.
    #[error("token has no email or sub claim")]
    MissingIdentity,
    /// The ID token of a page login does not carry that login's `nonce`.
    #[error("the ID token's nonce does not match this login (sign in again)")]
    NonceMismatch,
}

/// Authentication configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// `admin.tokens_file` could not be read.
    #[error("admin.tokens_file {path}: cannot read: {source}")]
    ReadTokensFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The environment variable named by `admin.tokens_env` is not set (or not UTF-8).
    #[error("admin.tokens_env: environment variable {var} is not set")]
    TokensEnvMissing {
        /// The variable's name.
        var: String,
    },
    /// A token list is not a YAML list of `{token_sha256, identity, groups}`.
    #[error("{origin}: {source}")]
    ParseTokens {
        /// `admin.tokens_file <path>` or `admin.tokens_env <VAR>`.
        origin: String,
        /// The YAML error, with its location.
        source: serde_yaml_ng::Error,
    },
    /// A `token_sha256` is not 64 hex digits.
    #[error(
        "{origin}: entry {index} ({identity}): token_sha256 must be 64 hex digits (printf %s \"$TOKEN\" | sha256sum)"
    )]
    InvalidTokenHash {
        /// Where the list came from.
        origin: String,
        /// 0-based entry index.
        index: usize,
        /// The entry's identity.
        identity: String,
    },
    /// An entry has an empty identity.
    #[error("{origin}: entry {index}: identity must not be empty")]
    EmptyIdentity {
        /// Where the list came from.
        origin: String,
        /// 0-based entry index.
        index: usize,
    },
    /// Two entries share one token hash, so the identity would be ambiguous.
    #[error("{origin}: entry {index} ({identity}) repeats a token_sha256 already configured")]
    DuplicateToken {
        /// Where the list came from.
        origin: String,
        /// 0-based entry index.
        index: usize,
        /// The entry's identity.
        identity: String,
    },
    /// `admin.oidc` names no JWKS, or both a file and a URL.
    #[error("admin.oidc: set exactly one of jwks_file or jwks_url")]
    JwksSource,
    /// `admin.oidc.issuer` or `audience` is empty.
    #[error("admin.oidc: issuer and audience must not be empty")]
    EmptyIssuerOrAudience,
    /// The JWKS file could not be read.
    #[error("admin.oidc.jwks_file {path}: cannot read: {source}")]
    ReadJwks {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The JWKS URL could not be fetched.
    #[error("admin.oidc.jwks_url {url}: {source}")]
    FetchJwks {
        /// The URL, path and query left out.
        url: String,
        /// What went wrong.
        source: OutboundError,
    },
    /// The JWKS URL answered with a non-200 status.
    #[error("admin.oidc.jwks_url {url}: HTTP {status}")]
    JwksStatus {
        /// The URL, path and query left out.
        url: String,
        /// The status.
        status: hyper::StatusCode,
    },
    /// The JWKS is not a JSON `{"keys": [...]}` document.
    #[error("{origin}: not a JWKS document: {source}")]
    ParseJwks {
        /// Where it came from.
        origin: String,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// `admin.slack` cannot be used (its signing secret, mostly).
    #[error("admin.slack: {0}")]
    Slack(#[from] SlackConfigError),
}

/// One entry of a token list, as configured.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    /// SHA-256 of the token, hex.
    token_sha256: String,
    /// Who presents it.
    identity: String,
    /// Their groups.
    #[serde(default)]
    groups: Vec<String>,
}

/// A static token, by hash.
#[derive(Debug, Clone)]
pub struct StaticToken {
    sha256: [u8; 32],
    identity: String,
    groups: Vec<String>,
}

/// Decides who is calling from a bearer token.
#[derive(Debug, Default)]
pub struct Authenticator {
    tokens: Vec<StaticToken>,
    oidc: Option<OidcVerifier>,
    slack: Option<SlackAuth>,
}

impl Authenticator {
    /// Loads every configured credential source. A JWKS URL that cannot be
    /// fetched now is only a warning (it is retried when a token arrives);
    /// anything else wrong is an error.
    pub async fn from_config(admin: &AdminConfig) -> Result<Self, AuthConfigError> {
        Self::from_config_with_env(admin, |var| std::env::var(var).ok()).await
    }

    /// [`from_config`](Self::from_config) with the environment read through `env`.
    async fn from_config_with_env(
        admin: &AdminConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, AuthConfigError> {
        let mut tokens = Vec::new();
        if let Some(path) = &admin.tokens_file {
            let text = std::fs::read_to_string(path).map_err(|source| {
                AuthConfigError::ReadTokensFile {
                    path: path.clone(),
                    source,
                }
            })?;
            tokens.extend(parse_tokens(
                &text,
                &format!("admin.tokens_file {}", path.display()),
            )?);
        }
        if let Some(var) = &admin.tokens_env {
            let text =
                env(var).ok_or_else(|| AuthConfigError::TokensEnvMissing { var: var.clone() })?;
            tokens.extend(parse_tokens(&text, &format!("admin.tokens_env {var}"))?);
        }
        check_unique(&tokens)?;
        let oidc = match &admin.oidc {
            Some(config) => Some(OidcVerifier::new(config).await?),
            None => None,
        };
        let slack = match &admin.slack {
            Some(config) => Some(SlackAuth::from_config(config, &env)?),
            None => None,
        };
        let auth = Self {
            tokens,
            oidc,
            slack,
        };
        if !auth.is_configured() {
            tracing::warn!(
                "admin API has no authentication configured: the holds API refuses everyone \
                 (set admin.tokens_file, admin.tokens_env or admin.oidc)"
            );
        }
        Ok(auth)
    }

    /// An authenticator from already-loaded parts.
    pub fn new(tokens: Vec<StaticToken>, oidc: Option<OidcVerifier>) -> Self {
        Self {
            tokens,
            oidc,
            slack: None,
        }
    }

    /// Adds Slack's button callbacks.
    #[must_use]
    pub fn with_slack(mut self, slack: SlackAuth) -> Self {
        self.slack = Some(slack);
        self
    }

    /// Slack's callback verification and user mapping, when `admin.slack` is set.
    pub fn slack(&self) -> Option<&SlackAuth> {
        self.slack.as_ref()
    }

    /// The OIDC verifier, when `admin.oidc` is set.
    pub fn oidc(&self) -> Option<&OidcVerifier> {
        self.oidc.as_ref()
    }

    /// The groups of `identity` in the static token lists (every entry with
    /// that identity, deduplicated, in the order configured).
    pub fn groups_of(&self, identity: &str) -> Vec<String> {
        let mut groups: Vec<String> = Vec::new();
        for token in self.tokens.iter().filter(|t| t.identity == identity) {
            for group in &token.groups {
                if !groups.contains(group) {
                    groups.push(group.clone());
                }
            }
        }
        groups
    }

    /// Whether any credential source is configured. Without one, every
    /// request to the holds API is refused.
    pub fn is_configured(&self) -> bool {
        !self.tokens.is_empty() || self.oidc.is_some()
    }

    /// Who presents `token` (the part after `Bearer `).
    pub async fn authenticate(&self, token: &str) -> Result<Decider, AuthError> {
        if !self.is_configured() {
            return Err(AuthError::NotConfigured);
        }
        if token.is_empty() {
            return Err(AuthError::MissingToken);
        }
        if let Some(found) = self.find_static(token) {
            return Ok(Decider {
                identity: found.identity.clone(),
                groups: found.groups.clone(),
            });
        }
        match &self.oidc {
            Some(oidc) if looks_like_jwt(token) => oidc.verify(token).await,
            _ => Err(AuthError::UnknownToken),
        }
    }

    /// The static token whose hash matches, comparing against every entry
    /// in constant time so timing reveals neither which nor how much matched.
    fn find_static(&self, token: &str) -> Option<&StaticToken> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for candidate in &self.tokens {
            if constant_time_eq(&presented, &candidate.sha256) {
                found = Some(candidate);
            }
        }
        found
    }
}

/// Parses a token list (`origin` names it in errors).
pub fn parse_tokens(yaml: &str, origin: &str) -> Result<Vec<StaticToken>, AuthConfigError> {
    let entries: Vec<TokenEntry> = if yaml.trim().is_empty() {
        Vec::new()
    } else {
        serde_yaml_ng::from_str(yaml).map_err(|source| AuthConfigError::ParseTokens {
            origin: origin.to_owned(),
            source,
        })?
    };
    entries
        .into_iter()
        .enumerate()
        .map(|(index, entry)| {
            if entry.identity.trim().is_empty() {
                return Err(AuthConfigError::EmptyIdentity {
                    origin: origin.to_owned(),
                    index,
                });
            }
            let sha256 = hex::decode(entry.token_sha256.trim())
                .ok()
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| AuthConfigError::InvalidTokenHash {
                    origin: origin.to_owned(),
                    index,
                    identity: entry.identity.clone(),
                })?;
            Ok(StaticToken {
                sha256,
                identity: entry.identity,
                groups: entry.groups,
            })
        })
        .collect()
}

fn check_unique(tokens: &[StaticToken]) -> Result<(), AuthConfigError> {
    for (index, token) in tokens.iter().enumerate() {
        if tokens[..index]
            .iter()
            .any(|earlier| earlier.sha256 == token.sha256)
        {
            return Err(AuthConfigError::DuplicateToken {
                origin: "admin tokens".to_owned(),
                index,
                identity: token.identity.clone(),
            });
        }
    }
    Ok(())
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|&b| b == b'.').count() == 2
}

/// Where the issuer's keys come from.
#[derive(Debug, Clone)]
enum JwksSource {
    File(PathBuf),
    Url(String),
}

/// One usable verification key from the JWKS.
struct VerificationKey {
    kid: Option<String>,
    /// The algorithms this key may verify (narrowed by the JWK's `alg` when present).
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// Verifies OIDC JWTs against one issuer's JWKS.
#[derive(Debug)]
pub struct OidcVerifier {
    issuer: String,
    audience: String,
    /// `client_id`: ID tokens for the approvals page are accepted too.
    client_id: Option<String>,
    /// The page's login, when a client id is configured.
    login: Option<OidcLogin>,
    groups_claim: String,
    source: JwksSource,
    keys: RwLock<Arc<Vec<VerificationKey>>>,
    /// When an unknown `kid` last triggered a reload; serializes refetches.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

impl OidcVerifier {
    /// Loads the JWKS. A file must load; a URL that fails now is retried later.
    pub async fn new(config: &OidcConfig) -> Result<Self, AuthConfigError> {
        if config.issuer.is_empty() || config.audience.is_empty() {
            return Err(AuthConfigError::EmptyIssuerOrAudience);
        }
        let source = match (&config.jwks_file, &config.jwks_url) {
            (Some(path), None) => JwksSource::File(path.clone()),
            (None, Some(url)) => JwksSource::Url(url.clone()),
            _ => return Err(AuthConfigError::JwksSource),
        };
        let keys = match load_jwks(&source).await {
            Ok(keys) => keys,
            Err(error @ (AuthConfigError::ReadJwks { .. } | AuthConfigError::ParseJwks { .. }))
                if matches!(source, JwksSource::File(_)) =>
            {
                return Err(error);
            }
            Err(error) => {
                tracing::warn!(%error, "OIDC keys unavailable for now; retrying when a token arrives");
                Vec::new()
            }
        };
        tracing::info!(issuer = %config.issuer, keys = keys.len(), "OIDC verification keys loaded");
        Ok(Self {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            client_id: config.client_id.clone(),
            login: OidcLogin::from_config(config),
            groups_claim: config.groups_claim.clone(),
            source,
            keys: RwLock::new(Arc::new(keys)),
            // The first unknown `kid` may refetch at once; later ones wait out the interval.
            last_fetch: tokio::sync::Mutex::new(None),
        })
    }

    /// Verifies `token` and reads the caller's identity and groups.
    pub async fn verify(&self, token: &str) -> Result<Decider, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(AuthError::InvalidJwt)?;
        if !ACCEPTED_ALGORITHMS.contains(&header.alg) {
            return Err(AuthError::UnsupportedAlgorithm(header.alg));
        }
        let mut keys = self.candidates(header.kid.as_deref(), header.alg);
        if keys.is_empty() && header.kid.is_some() {
            self.refetch_for(header.kid.as_deref(), header.alg).await;
            keys = self.candidates(header.kid.as_deref(), header.alg);
        }
        if keys.is_empty() {
            return Err(AuthError::UnknownKey { kid: header.kid });
        }

        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        match &self.client_id {
            Some(client_id) => validation.set_audience(&[&self.audience, client_id]),
            None => validation.set_audience(&[&self.audience]),
        }
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = JWT_LEEWAY_SECS;

        let all = self.current_keys();
        let mut last_error = None;
        for index in keys {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &all[index].key, &validation) {
                Ok(data) => return self.decider(&data.claims),
                Err(error) => last_error = Some(error),
            }
        }
        Err(AuthError::InvalidJwt(
            last_error.expect("at least one key was tried"),
        ))
    }

    /// The approvals page's OIDC login, when `admin.oidc.client_id` is set.
    pub fn login(&self) -> Option<&OidcLogin> {
        self.login.as_ref()
    }

    fn current_keys(&self) -> Arc<Vec<VerificationKey>> {
        Arc::clone(
            &self
                .keys
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Indexes (into [`current_keys`](Self::current_keys)) of keys that may verify `alg` with `kid`.
    fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Vec<usize> {
        self.current_keys()
            .iter()
            .enumerate()
            .filter(|(_, key)| key.algorithms.contains(&alg))
            .filter(|(_, key)| kid.is_none() || key.kid.as_deref() == kid)
            .map(|(index, _)| index)
            .collect()
    }

    /// Reloads the JWKS for an unknown `kid`, at most once per [`JWKS_REFETCH_INTERVAL`].
    async fn refetch_for(&self, kid: Option<&str>, alg: Algorithm) {
        let mut last_fetch = self.last_fetch.lock().await;
        // Another request may have refetched while we waited for the lock.
        if !self.candidates(kid, alg).is_empty() {
            return;
        }
        if last_fetch.is_some_and(|at| at.elapsed() < JWKS_REFETCH_INTERVAL) {
            tracing::debug!(
                kid,
                "unknown OIDC key id; JWKS refetched recently, not again yet"
            );
            return;
        }
        *last_fetch = Some(Instant::now());
        match load_jwks(&self.source).await {
            Ok(keys) => {
                tracing::info!(
                    kid,
                    keys = keys.len(),
                    "OIDC keys reloaded for an unknown key id"
                );
                *self
                    .keys
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
            }
            Err(error) => tracing::warn!(%error, "OIDC keys could not be reloaded"),
        }
    }

    fn decider(&self, claims: &Map<String, Value>) -> Result<Decider, AuthError> {
        let email_unverified = claims.get("email_verified") == Some(&Value::Bool(false));
        let email = claims
            .get("email")
            .and_then(Value::as_str)
            .filter(|e| !e.is_empty() && !email_unverified);
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let identity = email.or(sub).ok_or(AuthError::MissingIdentity)?.to_owned();
        let groups = match claim(claims, &self.groups_claim) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(Value::String(text)) => text.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        Ok(Decider { identity, groups })
    }
}

/// Signature algorithms accepted for OIDC tokens: asymmetric only.
const ACCEPTED_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// A claim by exact name, or else by a dotted path into nested objects.
fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    let mut parts = name.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

async fn load_jwks(source: &JwksSource) -> Result<Vec<VerificationKey>, AuthConfigError> {
    let (text, origin) = match source {
        JwksSource::File(path) => (
            read_jwks_file(path)?,
            format!("admin.oidc.jwks_file {}", path.display()),
        ),
        JwksSource::Url(url) => {
            let shown = outbound::redact(url);
            let response = outbound::send(OutboundRequest {
                method: Method::GET,
                url,
                bearer: None,
                body: None,
                timeout: JWKS_FETCH_TIMEOUT,
                max_body: JWKS_MAX_BYTES,
            })
            .await
            .map_err(|source| AuthConfigError::FetchJwks {
                url: shown.clone(),
                source,
            })?;
            if response.status != hyper::StatusCode::OK {
                return Err(AuthConfigError::JwksStatus {
                    url: shown,
                    status: response.status,
                });
            }
            (
                String::from_utf8_lossy(&response.body).into_owned(),
                format!("admin.oidc.jwks_url {shown}"),
            )
        }
    };
    parse_jwks(&text, &origin)
}

fn read_jwks_file(path: &Path) -> Result<String, AuthConfigError> {
    std::fs::read_to_string(path).map_err(|source| AuthConfigError::ReadJwks {
        path: path.to_owned(),
        source,
    })
}

/// The usable signing keys of a JWKS; keys hoop cannot use (encryption keys,
/// symmetric keys, unsupported curves) are skipped, not errors.
fn parse_jwks(text: &str, origin: &str) -> Result<Vec<VerificationKey>, AuthConfigError> {
    #[derive(Deserialize)]
    struct RawJwks {
        keys: Vec<Value>,
    }
    let raw: RawJwks = serde_json::from_str(text).map_err(|source| AuthConfigError::ParseJwks {
        origin: origin.to_owned(),
        source,
    })?;
    let keys = raw
        .keys
        .into_iter()
        .filter_map(|value| {
            let jwk: Jwk = match serde_json::from_value(value) {
                Ok(jwk) => jwk,
                Err(error) => {
                    tracing::debug!(%origin, %error, "skipping a JWK hoop cannot read");
                    return None;
                }
            };
            verification_key(&jwk)
        })
        .collect();
    Ok(keys)
}

fn verification_key(jwk: &Jwk) -> Option<VerificationKey> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let mut algorithms: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            EllipticCurve::P521 | EllipticCurve::Ed25519 => return None,
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            vec![Algorithm::EdDSA]
        }
        // Symmetric keys never verify OIDC tokens.
        AlgorithmParameters::OctetKey(_) | AlgorithmParameters::OctetKeyPair(_) => return None,
    };
    if let Some(declared) = jwk.common.key_algorithm {
        let declared: Algorithm = declared.to_string().parse().ok()?;
        algorithms.retain(|alg| *alg == declared);
    }
    if algorithms.is_empty() {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerificationKey {
        kid: jwk.common.key_id.clone(),
        algorithms,
        key,
    })
}

#[cfg(test)]
mod tests;
