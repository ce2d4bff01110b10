//! PostgreSQL's md5 password method: the PasswordMessage that answers
//! AuthenticationMD5Password is `md5` followed by the hex of
//! `md5(hex(md5(password ‖ user)) ‖ salt)`.

use md5::{Digest as _, Md5};

/// The answer to AuthenticationMD5Password with `salt` for `user`.
pub fn md5_password(user: &[u8], password: &[u8], salt: [u8; 4]) -> Vec<u8> {
    let inner = hex(&Md5::new()
        .chain_update(password)
        .chain_update(user)
        .finalize());
    let outer = hex(&Md5::new()
        .chain_update(inner.as_bytes())
        .chain_update(salt)
        .finalize());
    format!("md5{outer}").into_bytes()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(32), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_value() {
        // PostgreSQL stores `md5` + hex(md5(password ‖ user)) for an md5
        // role: for hoop_md5 / hoop-md5-pw that is
        // md549dff6f4f43867636a119b9db3885986 (read from pg_authid). The
        // answer to salt 01 02 03 04 is computed independently (Python's
        // hashlib).
        assert_eq!(
            md5_password(b"hoop_md5", b"hoop-md5-pw", [1, 2, 3, 4]),
            b"md59eaed9fe9a7ab6669b54a76eae8d4792"
        );
        assert_eq!(
            hex(&Md5::digest(b"hoop-md5-pwhoop_md5")),
            "49dff6f4f43867636a119b9db3885986"
        );
    }
}
