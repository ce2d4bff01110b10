//! caching_sha2_password and sha256_password: the message shapes hoop must
//! recognise to translate full authentication when only one leg is
//! encrypted, as MySQL Router does.
//!
//! The exchange (MySQL docs, `page_caching_sha2_authentication_exchanges`):
//! 1. The client answers the 20-byte scramble with 32 bytes,
//!    `SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) || scramble)` (or nothing for
//!    an empty password).
//! 2. The server answers AuthMoreData `0x03` (fast auth success: an OK
//!    follows) or `0x04` (perform full authentication).
//! 3. For full authentication the client sends, on a **secure** transport
//!    (TLS or a unix socket), the password and a NUL in clear; otherwise it
//!    asks for the server's RSA public key (`0x02`; sha256_password uses
//!    `0x01`), receives it as AuthMoreData (PEM), and sends
//!    `RSA-OAEP(pw || NUL XOR scramble)`.
//!
//! The server decides by **its own** leg: on a secure connection any
//! packet is taken as the cleartext password (a public-key request is then
//! a wrong password). So when the legs differ hoop translates:
//! - client over TLS, server in clear: the client sends the cleartext; hoop
//!   asks the server for its key (`0x02`), and sends the RSA ciphertext of
//!   [`obfuscate_password`];
//! - client in clear, server over TLS: the client asks for a key; hoop
//!   answers with its own public key, decrypts the client's ciphertext
//!   (then [`deobfuscate_password`]), and sends the cleartext upstream.
//!
//! The RSA arithmetic belongs to the driver (the `rsa` crate); this module
//! has the shapes and the XOR obfuscation.

/// The plugin name.
pub const PLUGIN: &[u8] = b"caching_sha2_password";
/// sha256_password's plugin name (full authentication only).
pub const SHA256_PLUGIN: &[u8] = b"sha256_password";
/// AuthMoreData: the scramble matched the server's cache; an OK follows.
pub const FAST_AUTH_SUCCESS: u8 = 0x03;
/// AuthMoreData: the server needs the password itself.
pub const PERFORM_FULL_AUTHENTICATION: u8 = 0x04;
/// Client: "send me your RSA public key" (caching_sha2_password).
pub const REQUEST_PUBLIC_KEY: u8 = 0x02;
/// Client: "send me your RSA public key" (sha256_password).
pub const SHA256_REQUEST_PUBLIC_KEY: u8 = 0x01;
/// The length of the fast-path scramble response.
pub const SCRAMBLE_RESPONSE_LEN: usize = 32;

/// What the server's AuthMoreData data means in this plugin's exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerSignal<'a> {
    /// `0x03`: authenticated from the cache; an OK follows.
    FastAuthSuccess,
    /// `0x04`: the client must send the password (cleartext or RSA).
    PerformFullAuthentication,
    /// The server's RSA public key, PEM-encoded.
    PublicKey(&'a [u8]),
}

/// Classifies the data of a server AuthMoreData packet (after its `0x01`).
pub fn classify_server(data: &[u8]) -> Option<ServerSignal<'_>> {
    match data {
        [FAST_AUTH_SUCCESS] => Some(ServerSignal::FastAuthSuccess),
        [PERFORM_FULL_AUTHENTICATION] => Some(ServerSignal::PerformFullAuthentication),
        pem if pem.starts_with(b"-----BEGIN ") => Some(ServerSignal::PublicKey(pem)),
        _ => None,
    }
}

/// What a client packet means after the server asked for full
/// authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMessage<'a> {
    /// A request for the server's public key.
    PublicKeyRequest,
    /// The password in clear (without its NUL): only valid on a secure leg.
    Cleartext(&'a [u8]),
    /// An RSA ciphertext of the obfuscated password.
    Encrypted(&'a [u8]),
}

/// Classifies a client packet of the full-authentication step. `secure`
/// says whether the client's own leg is encrypted: a client sends the
/// cleartext only there, and RSA ciphertexts only in clear.
pub fn classify_client(data: &[u8], secure: bool, sha256_password: bool) -> ClientMessage<'_> {
    let key_request = if sha256_password {
        SHA256_REQUEST_PUBLIC_KEY
    } else {
        REQUEST_PUBLIC_KEY
    };
    match data {
        [b] if *b == key_request => ClientMessage::PublicKeyRequest,
        _ if secure => ClientMessage::Cleartext(data.strip_suffix(&[0]).unwrap_or(data)),
        _ => ClientMessage::Encrypted(data),
    }
}

/// The AuthMoreData payload carrying `data` (`0x01` first).
pub fn more_data(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + data.len());
    out.push(crate::auth::AUTH_MORE_DATA_HEADER);
    out.extend_from_slice(data);
    out
}

/// The client packet that sends `password` in clear (on a secure leg).
pub fn cleartext_packet(password: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(password.len() + 1);
    out.extend_from_slice(password);
    out.push(0);
    out
}

/// The plaintext that is RSA-OAEP encrypted: `password || NUL`, XORed with
/// the scramble repeated. (An empty scramble leaves it unchanged.)
pub fn obfuscate_password(password: &[u8], scramble: &[u8]) -> Vec<u8> {
    let mut out = cleartext_packet(password);
    if !scramble.is_empty() {
        for (i, b) in out.iter_mut().enumerate() {
            *b ^= scramble[i % scramble.len()];
        }
    }
    out
}

/// The inverse of [`obfuscate_password`]: the password from the decrypted
/// plaintext, or `None` when it does not end in the NUL it must.
pub fn deobfuscate_password(plaintext: &[u8], scramble: &[u8]) -> Option<Vec<u8>> {
    let mut out = plaintext.to_vec();
    if !scramble.is_empty() {
        for (i, b) in out.iter_mut().enumerate() {
            *b ^= scramble[i % scramble.len()];
        }
    }
    match out.pop() {
        Some(0) => Some(out),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn server_signals() {
        assert_eq!(
            classify_server(b"\x03"),
            Some(ServerSignal::FastAuthSuccess)
        );
        assert_eq!(
            classify_server(b"\x04"),
            Some(ServerSignal::PerformFullAuthentication)
        );
        let pem = b"-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n";
        assert_eq!(classify_server(pem), Some(ServerSignal::PublicKey(pem)));
        assert_eq!(classify_server(b"\x03\x04"), None);
        assert_eq!(more_data(b"\x04"), b"\x01\x04");
    }

    #[test]
    fn client_messages() {
        assert_eq!(
            classify_client(b"\x02", false, false),
            ClientMessage::PublicKeyRequest
        );
        assert_eq!(
            classify_client(b"\x01", false, true),
            ClientMessage::PublicKeyRequest
        );
        assert_eq!(
            classify_client(b"s3cret\0", true, false),
            ClientMessage::Cleartext(b"s3cret")
        );
        // A one-byte password "\x02" is sent with its NUL, never bare.
        assert_eq!(
            classify_client(b"\x02\0", true, false),
            ClientMessage::Cleartext(b"\x02")
        );
        let ct = [7u8; 256];
        assert_eq!(
            classify_client(&ct, false, false),
            ClientMessage::Encrypted(&ct[..])
        );
    }

    #[test]
    fn xor_obfuscation_round_trips_and_cycles_the_scramble() {
        let scramble = b"0123456789abcdefghij";
        let pw = b"a password longer than the twenty-byte scramble";
        let ob = obfuscate_password(pw, scramble);
        assert_eq!(ob.len(), pw.len() + 1);
        assert_eq!(ob[0], b'a' ^ b'0');
        assert_eq!(ob[20], pw[20] ^ b'0', "the scramble repeats");
        assert_eq!(*ob.last().unwrap(), scramble[pw.len() % 20]);
        assert_eq!(deobfuscate_password(&ob, scramble).unwrap(), pw);
        assert_eq!(deobfuscate_password(b"x", b""), None);
        assert_eq!(obfuscate_password(b"", b""), vec![0]);
        assert_eq!(cleartext_packet(b"pw"), b"pw\0");
    }
}
