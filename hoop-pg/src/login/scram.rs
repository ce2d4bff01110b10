//! The client side of SCRAM-SHA-256 (RFC 5802, RFC 7677), as PostgreSQL
//! speaks it: hoop proves it knows an injected credential's password
//! without sending it, and checks that the server knows it too.
//!
//! Pure: messages in, messages out. The primitives are RustCrypto's
//! (`sha2`, `hmac`, `pbkdf2`); only the message handling is here. The
//! salted password (PBKDF2, thousands of HMAC rounds) is computed by
//! [`salted_password`] on its own, so the caller can run it off the async
//! runtime.
//!
//! hoop sends `n,,` (no channel binding): it offers the server only
//! `SCRAM-SHA-256`. As PostgreSQL does, the user name in the messages is
//! empty; the server takes the user from the start-up message.

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::{Digest as _, Sha256};

/// The mechanism's name in AuthenticationSASL.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
/// The GS2 header: no channel binding, no authorization identity.
const GS2_HEADER: &str = "n,,";
/// Random bytes in the client nonce (libpq's length).
const NONCE_BYTES: usize = 18;
/// The most PBKDF2 rounds hoop does for a server: far above any real
/// setting (PostgreSQL's default is 4096), low enough that a hostile
/// server cannot make a login take minutes.
pub const MAX_ITERATIONS: u32 = 1_000_000;

type HmacSha256 = Hmac<Sha256>;

/// What went wrong in the exchange.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// A server message is not of SCRAM's form.
    #[error("malformed SCRAM message from the server: {0}")]
    Malformed(&'static str),
    /// The server's nonce does not extend hoop's.
    #[error("the server's SCRAM nonce does not continue hoop's")]
    NonceMismatch,
    /// The server asked for more (or fewer) PBKDF2 rounds than hoop does.
    #[error("the server asked for {0} SCRAM iterations (hoop accepts 1 to {MAX_ITERATIONS})")]
    Iterations(u64),
    /// The server named an extension it requires and hoop does not know.
    #[error("the server requires a SCRAM extension hoop does not support")]
    MandatoryExtension,
    /// The server ended the exchange with an error (`e=…`).
    #[error("the server refused the SCRAM proof: {0}")]
    ServerError(String),
    /// The server's signature is not the one the password gives: the
    /// server does not know the password (it may not be the real server).
    #[error("the server's SCRAM signature does not match the password")]
    SignatureMismatch,
}

/// hoop's half of one exchange, from its first message on.
#[derive(Debug, Clone)]
pub struct ScramClient {
    nonce: String,
    client_first_bare: String,
}

/// The server's first message, checked.
#[derive(Debug, Clone)]
pub struct ServerFirst {
    raw: String,
    nonce: String,
    /// The salt, decoded.
    pub salt: Vec<u8>,
    /// PBKDF2 rounds.
    pub iterations: u32,
}

/// hoop's final message and what the server must answer with. Its
/// `Debug` shows nothing derived from the password.
#[derive(Clone)]
pub struct ClientFinal {
    /// `c=…,r=…,p=…`.
    pub message: Vec<u8>,
    server_key: [u8; 32],
    auth_message: Vec<u8>,
}

impl ScramClient {
    /// A new exchange with a random nonce.
    pub fn new() -> Self {
        let mut bytes = [0u8; NONCE_BYTES];
        rand::fill(&mut bytes);
        Self::with_nonce("", &BASE64.encode(bytes))
    }

    /// An exchange with a given user name and nonce (tests use RFC 7677's).
    pub fn with_nonce(user: &str, nonce: &str) -> Self {
        let user = user.replace('=', "=3D").replace(',', "=2C");
        Self {
            nonce: nonce.to_owned(),
            client_first_bare: format!("n={user},r={nonce}"),
        }
    }

    /// The client-first message (SASLInitialResponse data).
    pub fn client_first(&self) -> Vec<u8> {
        format!("{GS2_HEADER}{}", self.client_first_bare).into_bytes()
    }

    /// Reads the server-first message (AuthenticationSASLContinue data).
    pub fn server_first(&self, data: &[u8]) -> Result<ServerFirst, ScramError> {
        let raw = std::str::from_utf8(data)
            .map_err(|_| ScramError::Malformed("server-first-message is not UTF-8"))?;
        if raw.starts_with("m=") {
            return Err(ScramError::MandatoryExtension);
        }
        let mut parts = raw.split(',');
        let nonce = attribute(parts.next(), 'r')?;
        let salt = attribute(parts.next(), 's')?;
        let iterations = attribute(parts.next(), 'i')?;
        // Optional extensions may follow; none is mandatory here.
        if nonce.len() <= self.nonce.len() || !nonce.starts_with(&self.nonce) {
            return Err(ScramError::NonceMismatch);
        }
        if !nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
        {
            return Err(ScramError::Malformed(
                "the nonce has characters SCRAM forbids",
            ));
        }
        let salt = BASE64
            .decode(salt)
            .map_err(|_| ScramError::Malformed("the salt is not base64"))?;
        let iterations: u64 = iterations
            .parse()
            .map_err(|_| ScramError::Malformed("the iteration count is not a number"))?;
        let iterations = u32::try_from(iterations)
            .ok()
            .filter(|i| (1..=MAX_ITERATIONS).contains(i))
            .ok_or(ScramError::Iterations(iterations))?;
        Ok(ServerFirst {
            raw: raw.to_owned(),
            nonce: nonce.to_owned(),
            salt,
            iterations,
        })
    }

    /// The client-final message for `server` with the password's salted
    /// form, and the server signature to expect.
    pub fn client_final(&self, server: &ServerFirst, salted_password: &[u8; 32]) -> ClientFinal {
        let without_proof = format!("c={},r={}", BASE64.encode(GS2_HEADER), server.nonce);
        let auth_message = format!("{},{},{without_proof}", self.client_first_bare, server.raw);
        let client_key = hmac(salted_password, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let client_signature = hmac(&stored_key, auth_message.as_bytes());
        let mut proof = client_key;
        for (p, s) in proof.iter_mut().zip(client_signature) {
            *p ^= s;
        }
        ClientFinal {
            message: format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes(),
            server_key: hmac(salted_password, b"Server Key"),
            auth_message: auth_message.into_bytes(),
        }
    }
}

impl Default for ScramClient {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ClientFinal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientFinal(<redacted>)")
    }
}

impl ClientFinal {
    /// Checks the server-final message (AuthenticationSASLFinal data).
    pub fn verify_server_final(&self, data: &[u8]) -> Result<(), ScramError> {
        let raw = std::str::from_utf8(data)
            .map_err(|_| ScramError::Malformed("server-final-message is not UTF-8"))?;
        if let Some(error) = raw.strip_prefix("e=") {
            return Err(ScramError::ServerError(
                error.split(',').next().unwrap_or_default().to_owned(),
            ));
        }
        let verifier = attribute(raw.split(',').next(), 'v')?;
        let claimed = BASE64
            .decode(verifier)
            .map_err(|_| ScramError::Malformed("the server signature is not base64"))?;
        // ServerSignature = HMAC(ServerKey, AuthMessage), compared in
        // constant time by the MAC itself.
        let mut mac =
            HmacSha256::new_from_slice(&self.server_key).expect("HMAC takes a key of any length");
        mac.update(&self.auth_message);
        mac.verify_slice(&claimed)
            .map_err(|_| ScramError::SignatureMismatch)
    }
}

/// `Hi(Normalize(password), salt, i)`: PBKDF2-HMAC-SHA-256. The password
/// is SASLprep'd when it is UTF-8 that SASLprep accepts, and used as
/// bytes otherwise, as libpq and the server do. Slow by design: run it off
/// the async runtime.
pub fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let prepared = std::str::from_utf8(password)
        .ok()
        .and_then(|p| stringprep::saslprep(p).ok());
    let normalized = prepared.as_deref().map_or(password, str::as_bytes);
    pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(normalized, salt, iterations)
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The value of `name=value`.
fn attribute(part: Option<&str>, name: char) -> Result<&str, ScramError> {
    part.and_then(|p| p.strip_prefix(name))
        .and_then(|p| p.strip_prefix('='))
        .ok_or(ScramError::Malformed("an expected attribute is missing"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // RFC 7677, section 3: user "user", password "pencil".
    const CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_exchange() -> (ScramClient, ServerFirst, ClientFinal) {
        let client = ScramClient::with_nonce("user", CLIENT_NONCE);
        let server = client.server_first(SERVER_FIRST.as_bytes()).unwrap();
        let salted = salted_password(b"pencil", &server.salt, server.iterations);
        let last = client.client_final(&server, &salted);
        (client, server, last)
    }

    #[test]
    fn rfc_7677_test_vector() {
        let (client, server, last) = rfc_exchange();
        assert_eq!(client.client_first(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        assert_eq!(server.iterations, 4096);
        assert_eq!(
            String::from_utf8(last.message.clone()).unwrap(),
            CLIENT_FINAL
        );
        last.verify_server_final(SERVER_FINAL.as_bytes()).unwrap();
    }

    #[test]
    fn a_server_that_does_not_know_the_password_is_caught() {
        let (_, _, last) = rfc_exchange();
        assert_eq!(
            last.verify_server_final(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(ScramError::SignatureMismatch)
        );
        assert_eq!(
            last.verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4"),
            Err(ScramError::Malformed("the server signature is not base64"))
        );
        assert_eq!(
            last.verify_server_final(b"e=invalid-proof"),
            Err(ScramError::ServerError("invalid-proof".into()))
        );
        assert!(matches!(
            last.verify_server_final(b"x=1"),
            Err(ScramError::Malformed(_))
        ));
        // Another password gives another proof, and expects another signature.
        let client = ScramClient::with_nonce("user", CLIENT_NONCE);
        let server = client.server_first(SERVER_FIRST.as_bytes()).unwrap();
        let wrong = client.client_final(
            &server,
            &salted_password(b"pencil2", &server.salt, server.iterations),
        );
        assert_ne!(wrong.message, last.message);
        assert!(wrong.verify_server_final(SERVER_FINAL.as_bytes()).is_err());
    }

    #[test]
    fn server_first_messages_are_checked() {
        let client = ScramClient::with_nonce("", "abc");
        let bad = |m: &str| client.server_first(m.as_bytes()).unwrap_err();
        assert_eq!(bad("r=xyzdef,s=QUJD,i=4096"), ScramError::NonceMismatch);
        assert_eq!(bad("r=abc,s=QUJD,i=4096"), ScramError::NonceMismatch);
        assert_eq!(
            bad("m=ext,r=abcd,s=QUJD,i=1"),
            ScramError::MandatoryExtension
        );
        assert_eq!(bad("r=abcd,s=QUJD,i=0"), ScramError::Iterations(0));
        assert_eq!(
            bad("r=abcd,s=QUJD,i=99999999999"),
            ScramError::Iterations(99_999_999_999)
        );
        assert!(matches!(bad("r=abcd,s=!!,i=1"), ScramError::Malformed(_)));
        assert!(matches!(bad("r=abcd,i=1"), ScramError::Malformed(_)));
        assert!(matches!(bad("r=abcd,s=QUJD,i=x"), ScramError::Malformed(_)));
        let ok = client
            .server_first(b"r=abcdef,s=QUJD,i=4096,x=extension")
            .unwrap();
        assert_eq!((ok.salt.as_slice(), ok.iterations), (&b"ABC"[..], 4096));
    }

    #[test]
    fn nonces_are_random_and_printable() {
        let a = ScramClient::new();
        let b = ScramClient::new();
        assert_ne!(a.nonce, b.nonce);
        assert_eq!(a.nonce.len(), 24);
        assert!(a.client_first().starts_with(b"n,,n=,r="));
        assert!(!a.nonce.contains(','));
    }

    #[test]
    fn passwords_are_saslprepped_when_they_can_be() {
        // SASLprep maps U+00A0 (no-break space) to a space: the same key.
        assert_eq!(
            salted_password("a\u{a0}b".as_bytes(), b"salt", 2),
            salted_password(b"a b", b"salt", 2)
        );
        // Bytes that are not UTF-8 are used as they are.
        let raw = salted_password(&[0xff, 0xfe], b"salt", 2);
        assert_eq!(
            raw,
            pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(&[0xff, 0xfe], b"salt", 2)
        );
    }
}
