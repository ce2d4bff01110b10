//! Character sets in which ASCII text is not ASCII bytes.
//!
//! A result value reaches the client in its column's character set (the
//! collation of its column definition): `character_set_results`, or, when
//! that is `NULL` or `binary`, the value's own (`CONVERT(x USING utf16)`).
//! In every set MariaDB and MySQL offer but four, the ASCII characters are
//! the ASCII bytes, so a content detector that looks for `@` or digits in
//! the raw bytes finds what it looks for. In `ucs2`, `utf16`, `utf16le` and
//! `utf32` a character is two or four bytes, and `alice@example.com` has a
//! zero byte after (or before) every letter: a detector on the raw bytes
//! would see nothing. The same goes for `filename` (collation 17, which
//! `information_schema` does not list), in which only letters, digits and
//! `_` are themselves and every other character is `@` and four hex digits
//! of its code point (`@0040` for `@`, `@002e` for `.`), or `@` and two
//! letters for some accented ones (`é` is `@0p`). Values in these sets are
//! decoded to UTF-8 for governance and, where governance changed them,
//! encoded back.

/// A character set whose code units are wider than a byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WideCharset {
    /// `utf16` and `ucs2` (UCS-2 is UTF-16 without surrogates): big-endian.
    Utf16Be,
    /// `utf16le`.
    Utf16Le,
    /// `utf32`: big-endian.
    Utf32Be,
    /// `filename`: `@` escapes (see the module).
    Filename,
}

/// The `filename` character set's collation (internal: not in
/// `information_schema.COLLATIONS`, so not in [`crate::collation`]).
pub const FILENAME_COLLATION: u16 = 17;

impl WideCharset {
    /// The wide character set of collation `id`, `None` for every other
    /// (ASCII-compatible) one. An id the collation table does not know is
    /// `None` too: only the four sets above are wide, and the table holds
    /// every collation of theirs.
    pub fn of_collation(id: u16, mariadb: bool) -> Option<Self> {
        if id == FILENAME_COLLATION {
            return Some(Self::Filename);
        }
        Self::of_charset(crate::collation::charset_name(id, mariadb)?)
    }

    /// The wide character set named `name` (as `@@character_set_results`
    /// says it), `None` for every other.
    pub fn of_charset(name: &str) -> Option<Self> {
        match name {
            n if n.eq_ignore_ascii_case("utf16") || n.eq_ignore_ascii_case("ucs2") => {
                Some(Self::Utf16Be)
            }
            n if n.eq_ignore_ascii_case("utf16le") => Some(Self::Utf16Le),
            n if n.eq_ignore_ascii_case("utf32") => Some(Self::Utf32Be),
            n if n.eq_ignore_ascii_case("filename") => Some(Self::Filename),
            _ => None,
        }
    }

    /// Appends `bytes`, in this set, to `out` as UTF-8. What does not decode
    /// (a lone surrogate, a code point past U+10FFFF, a trailing partial
    /// unit) becomes U+FFFD, so every valid character around it is still
    /// seen.
    pub fn decode_into(self, bytes: &[u8], out: &mut Vec<u8>) {
        let mut push = |c: char| {
            let mut b = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
        };
        match self {
            Self::Utf16Be | Self::Utf16Le => {
                let units = bytes.chunks_exact(2).map(|u| {
                    if self == Self::Utf16Be {
                        u16::from_be_bytes([u[0], u[1]])
                    } else {
                        u16::from_le_bytes([u[0], u[1]])
                    }
                });
                for c in char::decode_utf16(units) {
                    push(c.unwrap_or(char::REPLACEMENT_CHARACTER));
                }
                if !bytes.len().is_multiple_of(2) {
                    push(char::REPLACEMENT_CHARACTER);
                }
            }
            Self::Filename => {
                let hex = |b: &[u8]| {
                    std::str::from_utf8(b)
                        .ok()
                        .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                };
                let mut i = 0;
                while i < bytes.len() {
                    if bytes[i] != b'@' {
                        let b = bytes[i];
                        push(if b.is_ascii() {
                            char::from(b)
                        } else {
                            char::REPLACEMENT_CHARACTER
                        });
                        i += 1;
                    } else if let Some(code) = bytes.get(i + 1..i + 5).and_then(hex) {
                        push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
                        i += 5;
                    } else {
                        // `@` and two letters: an accented letter from the
                        // server's table, which no detector looks for.
                        push(char::REPLACEMENT_CHARACTER);
                        i += 3;
                    }
                }
            }
            Self::Utf32Be => {
                for u in bytes.chunks_exact(4) {
                    let c = char::from_u32(u32::from_be_bytes([u[0], u[1], u[2], u[3]]));
                    push(c.unwrap_or(char::REPLACEMENT_CHARACTER));
                }
                if !bytes.len().is_multiple_of(4) {
                    push(char::REPLACEMENT_CHARACTER);
                }
            }
        }
    }

    /// Appends `text` (UTF-8; anything else is taken lossily) to `out` in
    /// this set.
    pub fn encode_into(self, text: &[u8], out: &mut Vec<u8>) {
        let text = String::from_utf8_lossy(text);
        match self {
            Self::Utf16Be => {
                for u in text.encode_utf16() {
                    out.extend_from_slice(&u.to_be_bytes());
                }
            }
            Self::Utf16Le => {
                for u in text.encode_utf16() {
                    out.extend_from_slice(&u.to_le_bytes());
                }
            }
            Self::Utf32Be => {
                for c in text.chars() {
                    out.extend_from_slice(&u32::from(c).to_be_bytes());
                }
            }
            Self::Filename => {
                use std::io::Write as _;
                for c in text.chars() {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        out.push(c as u8);
                    } else {
                        // Past the BMP: what the server writes for a
                        // character it cannot escape.
                        let code = u32::from(c);
                        let code = if code > 0xFFFF { u32::from('?') } else { code };
                        // Writing into a Vec does not fail.
                        let _ = write!(out, "@{code:04x}");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::WideCharset;

    fn decoded(set: WideCharset, bytes: &[u8]) -> String {
        let mut out = Vec::new();
        set.decode_into(bytes, &mut out);
        String::from_utf8(out).expect("decode_into writes UTF-8")
    }

    fn encoded(set: WideCharset, text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        set.encode_into(text.as_bytes(), &mut out);
        out
    }

    #[test]
    fn the_four_wide_sets_are_known_by_collation_and_name() {
        // MariaDB 10.11: ucs2_general_ci 35, utf16_general_ci 54,
        // utf16le_general_ci 56, utf32_general_ci 60; utf8mb4 45, latin1 8,
        // binary 63.
        assert_eq!(
            WideCharset::of_collation(35, true),
            Some(WideCharset::Utf16Be)
        );
        assert_eq!(
            WideCharset::of_collation(54, true),
            Some(WideCharset::Utf16Be)
        );
        assert_eq!(
            WideCharset::of_collation(56, true),
            Some(WideCharset::Utf16Le)
        );
        assert_eq!(
            WideCharset::of_collation(60, true),
            Some(WideCharset::Utf32Be)
        );
        for ascii_compatible in [45, 8, 63, 33, 28, 13] {
            assert_eq!(WideCharset::of_collation(ascii_compatible, true), None);
        }
        assert_eq!(WideCharset::of_charset("UTF16"), Some(WideCharset::Utf16Be));
        assert_eq!(WideCharset::of_charset("utf8mb4"), None);
        assert_eq!(
            WideCharset::of_collation(17, true),
            Some(WideCharset::Filename)
        );
    }

    #[test]
    fn filename_escapes_decode_and_encode_as_mariadb_writes_them() {
        // `SELECT CONVERT('aZ9_-.@ é€' USING filename)` on MariaDB 10.11.
        let wire = b"aZ9_@002d@002e@0040@0020@0p@20ac";
        assert_eq!(decoded(WideCharset::Filename, wire), "aZ9_-.@ \u{FFFD}€");
        assert_eq!(
            decoded(WideCharset::Filename, b"mail@0020alice@0040example@002ecom"),
            "mail alice@example.com"
        );
        assert_eq!(
            encoded(WideCharset::Filename, "aZ9_-.@ €"),
            b"aZ9_@002d@002e@0040@0020@20ac"
        );
        // A cut escape is not taken for one.
        assert_eq!(decoded(WideCharset::Filename, b"x@00"), "x\u{FFFD}");
    }

    #[test]
    fn values_round_trip_through_utf8() {
        let text = "mail alice@example.com — 4111 1111 1111 1111 𝄞";
        for set in [
            WideCharset::Utf16Be,
            WideCharset::Utf16Le,
            WideCharset::Utf32Be,
        ] {
            let wide = encoded(set, text);
            assert_ne!(wide, text.as_bytes());
            assert_eq!(decoded(set, &wide), text, "{set:?}");
        }
        // As MariaDB sends them (`HEX(CONVERT('a@b' USING …))`).
        assert_eq!(
            encoded(WideCharset::Utf16Be, "a@b"),
            [0, 0x61, 0, 0x40, 0, 0x62]
        );
        assert_eq!(
            encoded(WideCharset::Utf16Le, "a@b"),
            [0x61, 0, 0x40, 0, 0x62, 0]
        );
        assert_eq!(
            encoded(WideCharset::Utf32Be, "a@"),
            [0, 0, 0, 0x61, 0, 0, 0, 0x40]
        );
    }

    #[test]
    fn what_does_not_decode_becomes_a_replacement_and_the_rest_is_kept() {
        // A lone high surrogate, then "a@b", then half a unit.
        let bytes = [0xD8, 0x00, 0, b'a', 0, b'@', 0, b'b', 0];
        assert_eq!(decoded(WideCharset::Utf16Be, &bytes), "\u{FFFD}a@b\u{FFFD}");
        // Past U+10FFFF.
        let bytes = [0, 0x11, 0, 0, 0, 0, 0, b'x', 1];
        assert_eq!(decoded(WideCharset::Utf32Be, &bytes), "\u{FFFD}x\u{FFFD}");
    }
}
