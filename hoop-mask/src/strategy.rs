//! Strategies: how one value (or one detected span) is rewritten.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Strategy;

/// Characters `partial` keeps in place: they carry the format, not the value.
const FORMAT_CHARS: &[char] = &['-', ' ', '.', '@', '(', ')', '+', '/'];

/// Appends the masked form of `value` to `out`. Returns `false` for
/// [`Strategy::Null`] (the caller emits SQL NULL instead; nothing is written).
///
/// - `redact`: `[REDACTED:kind]`.
/// - `partial`: format characters stay; of the alphanumeric characters the
///   last `keep_last` stay, capped at half of them so a short value is never
///   shown whole; every other character becomes `*`. Works on characters,
///   so UTF-8 stays valid; a value that is not UTF-8 is treated byte by byte.
/// - `hash`: `tok_` + the first 16 hex digits of HMAC-SHA256(key, value).
pub fn apply(
    strategy: Strategy,
    kind: &str,
    keep_last: usize,
    key: &[u8],
    value: &[u8],
    out: &mut Vec<u8>,
) -> bool {
    match strategy {
        Strategy::Redact => {
            redact(kind, out);
            true
        }
        Strategy::Partial => {
            // ASCII (checked a word at a time) is the usual case: there a
            // character is a byte, and `partial_bytes` gives exactly what
            // `partial_chars` would, without decoding.
            if value.is_ascii() {
                partial_bytes(value, keep_last, out);
            } else {
                match std::str::from_utf8(value) {
                    Ok(text) => partial_chars(text, keep_last, out),
                    Err(_) => partial_bytes(value, keep_last, out),
                }
            }
            true
        }
        Strategy::Hash => {
            hash_token(key, value, out);
            true
        }
        Strategy::Null => false,
    }
}

/// `[REDACTED:kind]`.
pub fn redact(kind: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"[REDACTED:");
    out.extend_from_slice(kind.as_bytes());
    out.push(b']');
}

/// `tok_` + 16 hex digits of the keyed MAC.
pub fn hash_token(key: &[u8], value: &[u8], out: &mut Vec<u8>) {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        redact("hash", out);
        return;
    };
    mac.update(value);
    let digest = mac.finalize().into_bytes();
    out.extend_from_slice(b"tok_");
    let mut hex = [0u8; 16];
    // 8 bytes -> 16 hex digits; the buffer is exactly the right size.
    if hex::encode_to_slice(&digest[..8], &mut hex).is_ok() {
        out.extend_from_slice(&hex);
    }
}

fn kept(alnum: usize, keep_last: usize) -> usize {
    keep_last.min(alnum / 2)
}

fn partial_chars(text: &str, keep_last: usize, out: &mut Vec<u8>) {
    let alnum = text.chars().filter(|c| c.is_alphanumeric()).count();
    let keep_from = alnum - kept(alnum, keep_last);
    let mut seen = 0;
    let mut buf = [0u8; 4];
    for c in text.chars() {
        if c.is_alphanumeric() {
            seen += 1;
            if seen > keep_from {
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            } else {
                out.push(b'*');
            }
        } else if FORMAT_CHARS.contains(&c) {
            out.push(c as u8);
        } else {
            out.push(b'*');
        }
    }
}

/// Byte classes for `partial_bytes`: 0 masked, 1 alphanumeric, 2 format.
const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() {
            t[b] = 1;
        }
        b += 1;
    }
    let mut i = 0;
    while i < FORMAT_CHARS.len() {
        t[FORMAT_CHARS[i] as usize] = 2;
        i += 1;
    }
    t
};

/// `partial` over bytes: an ASCII value (where it equals `partial_chars`),
/// or a value that is not UTF-8 (a non-ASCII byte is masked).
fn partial_bytes(value: &[u8], keep_last: usize, out: &mut Vec<u8>) {
    // One pass, one byte out per byte in: format bytes stay, the rest
    // become `*` (`extend` over a mapped slice reserves once and checks no
    // capacity per byte), counting the alphanumerics on the way...
    let mut alnum = 0;
    let base = out.len();
    out.extend(value.iter().map(|&b| {
        let class = CLASS[usize::from(b)];
        alnum += usize::from(class == 1);
        if class == 2 { b } else { b'*' }
    }));
    // ...then the last `kept` alphanumerics are put back.
    let mut keep = kept(alnum, keep_last);
    let mut i = value.len();
    while keep > 0 && i > 0 {
        i -= 1;
        if CLASS[usize::from(value[i])] == 1 {
            out[base + i] = value[i];
            keep -= 1;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn run(strategy: Strategy, keep_last: usize, value: &str) -> Option<String> {
        let mut out = Vec::new();
        apply(
            strategy,
            "ssn",
            keep_last,
            b"key-1",
            value.as_bytes(),
            &mut out,
        )
        .then(|| String::from_utf8(out).unwrap())
    }

    #[test]
    fn redact_names_the_kind() {
        assert_eq!(
            run(Strategy::Redact, 0, "123-45-6789").unwrap(),
            "[REDACTED:ssn]"
        );
    }

    #[test]
    fn partial_keeps_format_and_last_characters() {
        assert_eq!(
            run(Strategy::Partial, 4, "123-45-6789").unwrap(),
            "***-**-6789"
        );
        assert_eq!(
            run(Strategy::Partial, 4, "4111 1111 1111 1234").unwrap(),
            "**** **** **** 1234"
        );
        assert_eq!(
            run(Strategy::Partial, 4, "+1 (555) 123-4567").unwrap(),
            "+* (***) ***-4567"
        );
        assert_eq!(
            run(Strategy::Partial, 3, "bob@ex.com").unwrap(),
            "***@**.com"
        );
        // Other punctuation is masked too.
        assert_eq!(run(Strategy::Partial, 2, "a#b_c!d").unwrap(), "****c*d");
    }

    #[test]
    fn partial_is_utf8_safe_and_never_reveals_a_short_value_whole() {
        assert_eq!(run(Strategy::Partial, 2, "Zoë Ñúñez").unwrap(), "*** ***ez");
        assert_eq!(run(Strategy::Partial, 4, "1234").unwrap(), "**34");
        assert_eq!(run(Strategy::Partial, 4, "12").unwrap(), "*2");
        assert_eq!(run(Strategy::Partial, 4, "漢字かな").unwrap(), "**かな");
        let mut out = Vec::new();
        apply(Strategy::Partial, "k", 2, b"", b"ab\xffcd", &mut out);
        assert_eq!(out, b"***cd");
    }

    #[test]
    fn partial_on_ascii_bytes_equals_partial_on_characters() {
        // Every value of up to 4 characters over an alphabet of each class,
        // and longer generated ones, for several `keep_last`.
        let alphabet = b"a9Z-. @(+/#_!~";
        let mut values: Vec<Vec<u8>> = vec![Vec::new()];
        let mut layer: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for v in &layer {
                for &c in alphabet {
                    let mut w = v.clone();
                    w.push(c);
                    next.push(w);
                }
            }
            values.extend(next.iter().cloned());
            layer = next;
        }
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..2000 {
            let mut v = Vec::new();
            for _ in 0..(x % 40) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            values.push(v);
        }
        for v in &values {
            for keep in [0, 1, 2, 4, 7, 100] {
                let mut by_chars = Vec::new();
                partial_chars(std::str::from_utf8(v).unwrap(), keep, &mut by_chars);
                let mut by_bytes = Vec::new();
                partial_bytes(v, keep, &mut by_bytes);
                assert_eq!(
                    by_bytes,
                    by_chars,
                    "{:?} keep {keep}",
                    String::from_utf8_lossy(v)
                );
            }
        }
    }

    #[test]
    fn hash_is_keyed_and_deterministic() {
        let a = run(Strategy::Hash, 0, "123-45-6789").unwrap();
        assert_eq!(a, run(Strategy::Hash, 0, "123-45-6789").unwrap());
        assert_ne!(a, run(Strategy::Hash, 0, "123-45-6780").unwrap());
        assert!(a.starts_with("tok_") && a.len() == 20);
        let mut other = Vec::new();
        apply(Strategy::Hash, "k", 0, b"key-2", b"123-45-6789", &mut other);
        assert_ne!(a.as_bytes(), &other[..]);
    }

    #[test]
    fn null_writes_nothing() {
        assert_eq!(run(Strategy::Null, 0, "x"), None);
    }
}
