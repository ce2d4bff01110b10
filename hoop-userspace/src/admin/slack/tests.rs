//! Slack's request signatures and user mapping (the HTTP route is tested
//! with the rest of the admin API in `admin/tests/slack.rs`).
#![allow(clippy::unwrap_used)] // A test that cannot set up should fail loudly, right there.

use std::os::unix::fs::PermissionsExt as _;

use axum::http::HeaderValue;

use super::*;

const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
const NOW: i64 = 1_700_000_000;

/// Headers as Slack signs `body` at `at` with `secret`.
pub(crate) fn signed_headers(secret: &[u8], at: i64, body: &[u8]) -> HeaderMap {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(format!("v0:{at}:").as_bytes());
    mac.update(body);
    let signature = format!("v0={}", hex::encode(mac.finalize().into_bytes()));
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-slack-request-timestamp",
        HeaderValue::from_str(&at.to_string()).unwrap(),
    );
    headers.insert(
        "x-slack-signature",
        HeaderValue::from_str(&signature).unwrap(),
    );
    headers
}

fn auth() -> SlackAuth {
    let users = BTreeMap::from([
        (
            "U0ALICE".to_owned(),
            SlackUser {
                identity: "alice@example.com".to_owned(),
                groups: None,
            },
        ),
        (
            "U0BOB".to_owned(),
            SlackUser {
                identity: "bob@example.com".to_owned(),
                groups: Some(vec!["dba".to_owned()]),
            },
        ),
    ]);
    SlackAuth::new(SECRET.to_vec(), users, None)
}

#[test]
fn slacks_documented_example_verifies() {
    // The worked example of Slack's "Verifying requests from Slack" guide.
    let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-slack-request-timestamp",
        HeaderValue::from_static("1531420618"),
    );
    headers.insert(
        "x-slack-signature",
        HeaderValue::from_static(
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
        ),
    );
    let slack = SlackAuth::new(SECRET.to_vec(), BTreeMap::new(), None);
    assert_eq!(slack.verify(&headers, body, 1_531_420_618 + 10), Ok(()));
    let mut tampered = body.to_vec();
    tampered[6] = b'X';
    assert_eq!(
        slack.verify(&headers, &tampered, 1_531_420_618 + 10),
        Err(SignatureError::Mismatch)
    );
}

#[test]
fn a_signature_with_another_secret_or_body_is_refused() {
    let slack = auth();
    let body = b"payload=%7B%7D";
    assert_eq!(
        slack.verify(&signed_headers(b"another secret", NOW, body), body, NOW),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        slack.verify(&signed_headers(SECRET, NOW, b"payload=x"), body, NOW),
        Err(SignatureError::Mismatch)
    );
    // The timestamp is part of what is signed.
    let mut moved = signed_headers(SECRET, NOW, body);
    moved.insert(
        "x-slack-request-timestamp",
        HeaderValue::from_str(&(NOW + 1).to_string()).unwrap(),
    );
    assert_eq!(
        slack.verify(&moved, body, NOW),
        Err(SignatureError::Mismatch)
    );
    assert_eq!(
        slack.verify(&signed_headers(SECRET, NOW, body), body, NOW),
        Ok(())
    );
}

#[test]
fn stale_and_future_timestamps_are_refused() {
    let slack = auth();
    let body = b"payload=%7B%7D";
    for at in [NOW - 301, NOW + 301, 0] {
        let result = slack.verify(&signed_headers(SECRET, at, body), body, NOW);
        assert!(
            matches!(result, Err(SignatureError::Stale { .. })),
            "{at}: {result:?}"
        );
    }
    for at in [NOW - 299, NOW + 299] {
        assert_eq!(
            slack.verify(&signed_headers(SECRET, at, body), body, NOW),
            Ok(())
        );
    }
}

#[test]
fn missing_or_malformed_headers_are_refused() {
    let slack = auth();
    let body = b"payload=%7B%7D";
    assert_eq!(
        slack.verify(&HeaderMap::new(), body, NOW),
        Err(SignatureError::Missing)
    );
    let mut only_signature = signed_headers(SECRET, NOW, body);
    only_signature.remove("x-slack-request-timestamp");
    assert_eq!(
        slack.verify(&only_signature, body, NOW),
        Err(SignatureError::Missing)
    );
    for (name, value) in [
        ("x-slack-request-timestamp", "soon"),
        ("x-slack-signature", "v1=00"),
        ("x-slack-signature", "v0=zz"),
        ("x-slack-signature", "v0=abcd"),
    ] {
        let mut headers = signed_headers(SECRET, NOW, body);
        headers.insert(name, HeaderValue::from_static(value));
        assert_eq!(
            slack.verify(&headers, body, NOW),
            Err(SignatureError::Malformed),
            "{name}: {value}"
        );
    }
}

#[test]
fn a_signed_request_is_accepted_once() {
    let slack = auth();
    let body = b"payload=%7B%22a%22%3A1%7D";
    let headers = signed_headers(SECRET, NOW, body);
    assert_eq!(slack.verify(&headers, body, NOW), Ok(()));
    assert_eq!(
        slack.verify(&headers, body, NOW + 5),
        Err(SignatureError::Replayed)
    );
    // Once it is too old to replay, it is forgotten (and refused as stale).
    assert!(matches!(
        slack.verify(&headers, body, NOW + 400),
        Err(SignatureError::Stale { .. })
    ));
    let later = b"payload=%7B%22a%22%3A2%7D";
    assert_eq!(
        slack.verify(&signed_headers(SECRET, NOW + 400, later), later, NOW + 400),
        Ok(())
    );
    assert_eq!(
        slack.seen.lock().unwrap().len(),
        1,
        "the old signature was pruned"
    );
}

#[test]
fn users_map_to_identities_with_configured_or_token_groups() {
    let slack = auth();
    let from_tokens = slack
        .decider("U0ALICE", |identity| {
            assert_eq!(identity, "alice@example.com");
            vec!["dba".to_owned(), "oncall".to_owned()]
        })
        .unwrap();
    assert_eq!(from_tokens.identity, "alice@example.com");
    assert_eq!(from_tokens.groups, ["dba", "oncall"]);
    let configured = slack
        .decider("U0BOB", |_| panic!("groups given in the config win"))
        .unwrap();
    assert_eq!(configured.groups, ["dba"]);
    assert!(slack.decider("U0EVE", |_| Vec::new()).is_none());
}

fn config(file: Option<PathBuf>, env: Option<&str>) -> SlackConfig {
    SlackConfig {
        signing_secret_file: file,
        signing_secret_env: env.map(str::to_owned),
        users: BTreeMap::new(),
        ui_url: None,
    }
}

#[test]
fn the_secret_file_must_be_private_and_is_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slack-signing-secret");
    std::fs::write(&path, b"s3cr3t\n").unwrap();
    for mode in [0o644, 0o640, 0o604, 0o660] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let error =
            SlackAuth::from_config(&config(Some(path.clone()), None), &|_| None).unwrap_err();
        assert!(
            matches!(error, SlackConfigError::SecretFileMode { .. }),
            "{mode:o}: {error}"
        );
        assert!(error.to_string().contains("chmod 600"), "{error}");
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let slack = SlackAuth::from_config(&config(Some(path.clone()), None), &|_| None).unwrap();
    assert_eq!(slack.secret, b"s3cr3t");

    std::fs::write(&path, b"\n").unwrap();
    assert!(matches!(
        SlackAuth::from_config(&config(Some(path), None), &|_| None),
        Err(SlackConfigError::EmptySecret { .. })
    ));
    assert!(matches!(
        SlackAuth::from_config(&config(Some(dir.path().join("none")), None), &|_| None),
        Err(SlackConfigError::ReadSecret { .. })
    ));
}

#[test]
fn the_secret_env_must_be_set() {
    let env = |var: &str| (var == "SLACK_SECRET").then(|| "from-env".to_owned());
    let slack = SlackAuth::from_config(&config(None, Some("SLACK_SECRET")), &env).unwrap();
    assert_eq!(slack.secret, b"from-env");
    assert!(matches!(
        SlackAuth::from_config(&config(None, Some("OTHER")), &env),
        Err(SlackConfigError::SecretEnvMissing { .. })
    ));
    assert!(matches!(
        SlackAuth::from_config(&config(None, None), &env),
        Err(SlackConfigError::SecretSource)
    ));
}
