//! caching_sha2_password full authentication across legs that differ in
//! TLS: the RSA half of the translation MySQL Router does
//! (`classic_auth_caching_sha2_forwarder.cc`). The message shapes and the
//! XOR obfuscation are in `hoop_proto_mysql::caching_sha2`; this module has
//! the keys.
//!
//! - Client over TLS, server in clear: the client's cleartext password is
//!   sent upstream as `RSA-OAEP-SHA1(pw || NUL XOR scramble)` under the
//!   server's own public key ([`encrypt_for_server`]).
//! - Client in clear, server over TLS: the client is given hoop's public key
//!   ([`HoopKey::public_pem`]); its ciphertext is decrypted
//!   ([`HoopKey::decrypt_password`]) and the cleartext goes upstream inside
//!   TLS.
//!
//! Passwords only pass through here: every copy this module makes is
//! zeroized when dropped, and nothing here logs.

use std::{
    path::Path,
    sync::{Arc, OnceLock},
};

use hoop_proto_mysql::caching_sha2::{deobfuscate_password, obfuscate_password};
use rsa::{
    Oaep, RsaPrivateKey, RsaPublicKey,
    pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey},
    pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey, LineEnding},
    rand_core::OsRng,
    traits::PublicKeyParts,
};
use sha1::Sha1;
use zeroize::Zeroizing;

/// The size of the key hoop generates when it has no RSA key of its own.
const GENERATED_KEY_BITS: usize = 2048;
/// The scramble caching_sha2 XORs with is the first 20 bytes of the nonce.
const SCRAMBLE_LEN: usize = 20;

/// Why a translation step failed; each names what the client is told.
#[derive(Debug, thiserror::Error)]
pub enum TranslationError {
    /// The server's AuthMoreData was not a PEM public key hoop can read.
    #[error("the server's RSA public key cannot be read ({0})")]
    ServerKey(String),
    /// The password does not fit one RSA-OAEP block of the server's key.
    #[error("the password is too long for the server's {0}-bit RSA key")]
    PasswordTooLong(usize),
    /// RSA encryption failed.
    #[error("RSA encryption of the password failed ({0})")]
    Encrypt(String),
    /// The client's packet is not a ciphertext under hoop's key: a cleartext
    /// password on an unencrypted connection, or a key cached from the
    /// server itself.
    #[error(
        "the client did not encrypt its password with hoop's public key ({len} bytes, not an \
         RSA-{bits} ciphertext); a password in clear over an unencrypted connection is refused, \
         and a client with the server's key cached (server_public_key, --server-public-key-path) \
         must ask for the key instead"
    )]
    NotForHoopKey {
        /// The packet's length.
        len: usize,
        /// hoop's key size in bits.
        bits: usize,
    },
    /// Decryption or the NUL check failed.
    #[error("the client's encrypted password cannot be decrypted with hoop's public key")]
    Decrypt,
    /// Generating hoop's key failed.
    #[error("hoop could not generate its RSA key ({0})")]
    KeyGeneration(String),
}

/// The scramble the XOR uses: the plugin data without its trailing NUL,
/// at most 20 bytes.
pub fn scramble_of(plugin_data: &[u8]) -> Vec<u8> {
    let data = plugin_data.strip_suffix(&[0]).unwrap_or(plugin_data);
    data[..data.len().min(SCRAMBLE_LEN)].to_vec()
}

/// Parses the server's public key: SPKI (`BEGIN PUBLIC KEY`, what MySQL
/// sends) or PKCS#1 (`BEGIN RSA PUBLIC KEY`).
pub fn parse_server_key(pem: &[u8]) -> Result<RsaPublicKey, TranslationError> {
    let text = std::str::from_utf8(pem)
        .map_err(|_| TranslationError::ServerKey("not text".into()))?
        .trim_end_matches(['\0', '\n', '\r', ' '])
        .trim_start();
    RsaPublicKey::from_public_key_pem(text)
        .or_else(|_| RsaPublicKey::from_pkcs1_pem(text))
        .map_err(|e| TranslationError::ServerKey(e.to_string()))
}

/// `RSA-OAEP-SHA1(password || NUL XOR scramble)` under the server's key:
/// what the server's `caching_sha2_password` decrypts on a plaintext leg.
pub fn encrypt_for_server(
    key: &RsaPublicKey,
    password: &[u8],
    scramble: &[u8],
) -> Result<Vec<u8>, TranslationError> {
    // OAEP with SHA-1: 2 * 20 + 2 bytes of padding.
    if password.len() + 1 > key.size().saturating_sub(42) {
        return Err(TranslationError::PasswordTooLong(key.size() * 8));
    }
    let plaintext = Zeroizing::new(obfuscate_password(password, scramble));
    key.encrypt(&mut OsRng, Oaep::new::<Sha1>(), &plaintext)
        .map_err(|e| TranslationError::Encrypt(e.to_string()))
}

/// hoop's own RSA key pair, shown to clients on a plaintext leg whose
/// server leg is TLS. Memory only.
pub struct HoopKey {
    private: RsaPrivateKey,
    public_pem: String,
}

impl std::fmt::Debug for HoopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HoopKey")
            .field("bits", &(self.private.size() * 8))
            .finish_non_exhaustive()
    }
}

impl HoopKey {
    fn from_private(private: RsaPrivateKey) -> Result<Self, TranslationError> {
        let public_pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| TranslationError::KeyGeneration(e.to_string()))?;
        Ok(Self {
            private,
            public_pem,
        })
    }

    /// A fresh 2048-bit key (CPU-bound: run it off the async threads).
    pub fn generate() -> Result<Self, TranslationError> {
        let private = RsaPrivateKey::new(&mut OsRng, GENERATED_KEY_BITS)
            .map_err(|e| TranslationError::KeyGeneration(e.to_string()))?;
        Self::from_private(private)
    }

    /// The key of hoop's TLS certificate, when it is an RSA key (PKCS#8 or
    /// PKCS#1 PEM), as MySQL Router does; `None` otherwise.
    pub fn from_tls_key_file(path: &Path) -> Option<Self> {
        let pem = Zeroizing::new(std::fs::read_to_string(path).ok()?);
        let private = RsaPrivateKey::from_pkcs8_pem(&pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(&pem))
            .ok()?;
        Self::from_private(private).ok()
    }

    /// The public key as the PEM a client reads (`BEGIN PUBLIC KEY`).
    pub fn public_pem(&self) -> &[u8] {
        self.public_pem.as_bytes()
    }

    /// The password from a client's `RSA-OAEP-SHA1(pw || NUL XOR scramble)`.
    pub fn decrypt_password(
        &self,
        ciphertext: &[u8],
        scramble: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, TranslationError> {
        if ciphertext.len() != self.private.size() {
            return Err(TranslationError::NotForHoopKey {
                len: ciphertext.len(),
                bits: self.private.size() * 8,
            });
        }
        let plaintext = Zeroizing::new(
            self.private
                .decrypt(Oaep::new::<Sha1>(), ciphertext)
                .map_err(|_| TranslationError::Decrypt)?,
        );
        deobfuscate_password(&plaintext, scramble)
            .map(Zeroizing::new)
            .ok_or(TranslationError::Decrypt)
    }
}

/// hoop's key, made once: from the TLS key when it is RSA, else generated
/// on first use.
#[derive(Debug, Default)]
pub struct HoopKeySlot {
    key: OnceLock<Result<Arc<HoopKey>, String>>,
}

impl HoopKeySlot {
    /// A slot holding `key` already.
    pub fn with_key(key: HoopKey) -> Self {
        let slot = Self::default();
        let _ = slot.key.set(Ok(Arc::new(key)));
        slot
    }

    /// The key, generated (off the async threads) the first time.
    pub async fn get(self: &Arc<Self>) -> Result<Arc<HoopKey>, TranslationError> {
        if let Some(k) = self.key.get() {
            return k.clone().map_err(TranslationError::KeyGeneration);
        }
        let slot = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            slot.key
                .get_or_init(|| HoopKey::generate().map(Arc::new).map_err(|e| e.to_string()))
                .clone()
        })
        .await
        .map_err(|e| TranslationError::KeyGeneration(e.to_string()))?
        .map_err(TranslationError::KeyGeneration)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn small_key() -> HoopKey {
        // 1024 bits keeps the unit test quick; the arithmetic is the same.
        HoopKey::from_private(RsaPrivateKey::new(&mut OsRng, 1024).unwrap()).unwrap()
    }

    #[test]
    fn a_password_encrypted_for_a_key_decrypts_with_it() {
        let key = small_key();
        let public = parse_server_key(key.public_pem()).unwrap();
        let scramble = scramble_of(b"0123456789abcdefghij\0");
        assert_eq!(scramble.len(), 20);
        let ct = encrypt_for_server(&public, b"s3cret pw", &scramble).unwrap();
        assert_eq!(ct.len(), 128);
        let pw = key.decrypt_password(&ct, &scramble).unwrap();
        assert_eq!(&pw[..], b"s3cret pw");
        // Another scramble: the NUL check fails or the password differs.
        let other = key.decrypt_password(&ct, b"ABCDEFGHIJKLMNOPQRST");
        assert!(other.is_err() || other.unwrap()[..] != b"s3cret pw"[..]);
    }

    #[test]
    fn what_is_not_a_ciphertext_for_hoop_is_refused() {
        let key = small_key();
        let e = key.decrypt_password(b"s3cret\0", b"x").unwrap_err();
        assert!(
            matches!(e, TranslationError::NotForHoopKey { len: 7, .. }),
            "{e}"
        );
        let e = key.decrypt_password(&[0x55; 128], b"x").unwrap_err();
        assert!(matches!(e, TranslationError::Decrypt), "{e}");
    }

    #[test]
    fn server_keys_are_read_in_both_pem_forms_and_garbage_is_refused() {
        let key = small_key();
        let mut pem = key.public_pem().to_vec();
        pem.push(0);
        assert!(parse_server_key(&pem).is_ok());
        let pkcs1 = {
            use rsa::pkcs1::EncodeRsaPublicKey;
            key.private
                .to_public_key()
                .to_pkcs1_pem(LineEnding::LF)
                .unwrap()
        };
        assert!(parse_server_key(pkcs1.as_bytes()).is_ok());
        assert!(
            parse_server_key(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
                .is_err()
        );
        assert!(parse_server_key(&[0xff, 0xfe]).is_err());
        let public = parse_server_key(key.public_pem()).unwrap();
        assert!(matches!(
            encrypt_for_server(&public, &[b'a'; 200], b"x"),
            Err(TranslationError::PasswordTooLong(1024))
        ));
    }
}
