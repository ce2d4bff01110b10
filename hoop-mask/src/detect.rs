//! Content detectors: find sensitive spans (emails, card numbers, …) in a value.
//!
//! Every built-in detector is a hand-written scanner behind a cheap
//! prefilter (`memchr` for `@`, `+`, `:`, `A`, `memmem` for `eyJ`, a digit
//! test for the numeric ones), so a value with nothing sensitive costs a few
//! SIMD passes and no allocation. Matches go into a caller-owned `Vec` that
//! is reused row after row.
//!
//! Decisions (documented because they trade recall for false positives):
//! - **SSN**: `AAA-GG-SSSS` or `AAA GG SSSS` (one consistent separator). Nine
//!   bare digits are *not* matched: they collide with order numbers, amounts
//!   and ids. Columns that store bare SSNs are covered by column rules.
//!   Invalid SSNs (area 000, 666, 9xx; group 00; serial 0000) are not matched.
//! - **Credit card**: 13–19 digits, single space or dash between digit
//!   groups, Luhn-valid, not adjacent to letters or digits. Sub-runs are
//!   tried at group boundaries, so `order 12 4111 1111 1111 1111` still finds
//!   the card.
//! - **Phone**: `+`, first digit 1–9, 8–15 digits in all; between digit
//!   groups up to two of ` `, `-`, `.`, `(`, `)` (so `+1 (555) 123-4567`).
//!   National numbers without `+` are not matched.
//! - **IBAN**: upper-case only, 15–34 characters, optional single spaces
//!   every four characters, mod-97 == 1.
//! - **IPv4**: dotted quad, octets ≤ 255, not part of a longer dotted or
//!   alphanumeric token. **IPv6**: maximal `[0-9a-fA-F:.]` tokens with two or
//!   more colons and a hex digit, parsed by `std::net::Ipv6Addr`.
//! - **JWT**: `eyJ` + base64url header (≥ 10), `.`, payload (≥ 2), `.`,
//!   optional signature. **AWS key id**: `AKIA|ASIA|ABIA|ACCA` + 16
//!   `[A-Z0-9]`, word-bounded.
//! - Overlapping matches: the earliest (then longest) wins.

use std::{net::Ipv6Addr, str::FromStr, sync::Arc};

use hoop_core::ValueContent;
use memchr::{memchr_iter, memmem};

use super::{BuiltinDetector, DetectorRule, MaskRulesError};

/// A detector named in a rule: built in, or a custom regex.
#[derive(Debug, Clone)]
pub enum DetectorKind {
    /// One of the built-in detectors.
    Builtin(BuiltinDetector),
    /// A custom detector: its name and pattern (run over the value's bytes,
    /// so non-UTF-8 values are scanned too).
    Custom {
        /// Name used in `[REDACTED:name]`.
        name: String,
        /// The pattern.
        regex: regex::Regex,
    },
}

/// One sensitive span in a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetectorMatch {
    /// Byte offset of the first byte.
    pub start: usize,
    /// Byte offset after the last byte.
    pub end: usize,
    /// Index of the detector in its [`DetectorSet`].
    pub detector: u16,
}

#[derive(Debug, Clone)]
enum Compiled {
    Builtin(BuiltinDetector),
    Custom(regex::bytes::Regex),
}

#[derive(Debug, Clone)]
struct Entry {
    compiled: Compiled,
    name: Arc<str>,
    /// `[REDACTED:name]`, made once.
    redacted: Box<[u8]>,
    rule: usize,
}

/// The detectors of every detector rule, compiled for scanning.
#[derive(Debug, Clone, Default)]
pub struct DetectorSet {
    entries: Vec<Entry>,
    /// Some entry needs the digit scan (cards, SSN, IPv4, IBAN).
    any_numeric: bool,
}

impl DetectorSet {
    /// Compiles the detectors of `rules`. A detector named by two rules is
    /// owned by the first.
    pub fn new(rules: &[DetectorRule]) -> Result<DetectorSet, MaskRulesError> {
        let mut entries: Vec<Entry> = Vec::new();
        for (rule, r) in rules.iter().enumerate() {
            for kind in &r.detectors {
                let (compiled, name): (Compiled, Arc<str>) = match kind {
                    DetectorKind::Builtin(b) => (Compiled::Builtin(*b), Arc::from(b.name())),
                    DetectorKind::Custom { name, regex } => {
                        let bytes = regex::bytes::Regex::new(regex.as_str()).map_err(|source| {
                            MaskRulesError::CustomRegex {
                                name: name.clone(),
                                source,
                            }
                        })?;
                        (Compiled::Custom(bytes), Arc::from(name.as_str()))
                    }
                };
                if entries.iter().any(|e| e.name == name) {
                    continue;
                }
                let mut redacted = Vec::new();
                crate::strategy::redact(&name, &mut redacted);
                entries.push(Entry {
                    compiled,
                    name,
                    redacted: redacted.into_boxed_slice(),
                    rule,
                });
            }
        }
        let any_numeric = entries.iter().any(|e| {
            matches!(
                e.compiled,
                Compiled::Builtin(
                    BuiltinDetector::CreditCard
                        | BuiltinDetector::Ssn
                        | BuiltinDetector::Ipv4
                        | BuiltinDetector::Iban
                )
            )
        });
        Ok(DetectorSet {
            entries,
            any_numeric,
        })
    }

    /// Whether any detector can find something in a value of this
    /// content. A custom detector's pattern can match anything; a built-in
    /// one needs bytes a value of a narrower content never has: an integer
    /// is an optional `-` and digits (only a card number, 13 or more
    /// digits, fits in one); a truth value is a word or a digit; a date or
    /// timestamp, in every date style, has digit runs of at most 12 digits
    /// between its `-` and space separators (a `timestamp` year has at most
    /// six digits; only a bare `date`, with no time after it, has seven), no `@`, no three-digit token
    /// (years print with four digits or more), no `+` before a non-zero
    /// two-digit offset with more digits, no dotted quad, no `::`, and
    /// only alphabetic names (the test `narrow_contents_never_match` checks
    /// every built-in detector against generated values of each).
    pub fn can_match(&self, content: ValueContent) -> bool {
        let builtin_can = |b: BuiltinDetector| match content {
            ValueContent::Any => true,
            ValueContent::Integer { digits } => b == BuiltinDetector::CreditCard && digits >= 13,
            ValueContent::Boolean | ValueContent::Temporal => false,
        };
        self.entries.iter().any(|e| match &e.compiled {
            Compiled::Builtin(b) => builtin_can(*b),
            Compiled::Custom(_) => true,
        })
    }

    /// No detectors.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The detector's name (`email`, or the custom detector's name).
    pub fn name(&self, detector: u16) -> &Arc<str> {
        &self.entries[usize::from(detector)].name
    }

    /// What `redact` makes of the detector's finds: `[REDACTED:name]`.
    pub fn redacted(&self, detector: u16) -> &[u8] {
        &self.entries[usize::from(detector)].redacted
    }

    /// The index of the detector rule that owns the detector.
    pub fn rule(&self, detector: u16) -> usize {
        self.entries[usize::from(detector)].rule
    }

    /// Finds every sensitive span of `value` into `out` (cleared first),
    /// sorted and non-overlapping. Allocates nothing when nothing matches
    /// (and nothing once `out` has grown to its working size).
    pub fn find(&self, value: &[u8], out: &mut Vec<DetectorMatch>) {
        out.clear();
        if self.entries.is_empty() || value.is_empty() {
            return;
        }
        // One counting pass (vectorised) decides which numeric scanners can
        // find anything: a card has at least 13 digits, an SSN 9, a dotted
        // quad 4, an IBAN its 2 check digits.
        let digits = if self.any_numeric {
            count_digits(value)
        } else {
            0
        };
        for (i, e) in self.entries.iter().enumerate() {
            let detector = i as u16;
            let mut push = |start: usize, end: usize| {
                out.push(DetectorMatch {
                    start,
                    end,
                    detector,
                });
            };
            match &e.compiled {
                Compiled::Builtin(b) => match b {
                    BuiltinDetector::Email => scan_email(value, &mut push),
                    BuiltinDetector::CreditCard if digits >= 13 => scan_card(value, &mut push),
                    BuiltinDetector::Ssn if digits >= 9 => scan_ssn(value, &mut push),
                    BuiltinDetector::Iban if digits >= 2 => scan_iban(value, &mut push),
                    BuiltinDetector::Phone => scan_phone(value, &mut push),
                    BuiltinDetector::Ipv4 if digits >= 4 => scan_ipv4(value, &mut push),
                    BuiltinDetector::Ipv6 => scan_ipv6(value, &mut push),
                    BuiltinDetector::Jwt => scan_jwt(value, &mut push),
                    BuiltinDetector::AwsAccessKey => scan_aws(value, &mut push),
                    _ => {}
                },
                Compiled::Custom(re) => {
                    for m in re.find_iter(value) {
                        if m.start() < m.end() {
                            push(m.start(), m.end());
                        }
                    }
                }
            }
        }
        if out.len() > 1 {
            out.sort_unstable_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
            let mut kept = 0;
            for i in 0..out.len() {
                if kept == 0 || out[i].start >= out[kept - 1].end {
                    out[kept] = out[i];
                    kept += 1;
                }
            }
            out.truncate(kept);
        }
    }
}

/// How many ASCII digits `v` holds. Counted in byte-wide lanes, 255 bytes
/// at a time so no lane can overflow, which the compiler vectorises (a
/// `filter(..).count()` it does not).
fn count_digits(v: &[u8]) -> usize {
    v.chunks(255)
        .map(|chunk| {
            let n = chunk
                .iter()
                .fold(0u8, |n, &b| n + u8::from(b.wrapping_sub(b'0') < 10));
            usize::from(n)
        })
        .sum()
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn before(v: &[u8], i: usize) -> Option<u8> {
    i.checked_sub(1).map(|j| v[j])
}

/// `i` starts a token: the byte before is not alphanumeric, and not a `-`
/// or `.` glued to a digit (so `1-123-45-6789` is not an SSN).
fn starts_token(v: &[u8], i: usize) -> bool {
    match before(v, i) {
        Some(b) if is_alnum(b) => false,
        Some(b'-' | b'.') => !before(v, i - 1).is_some_and(|b| b.is_ascii_digit()),
        None | Some(_) => true,
    }
}

/// `end` ends a token: the byte there is not alphanumeric, and not a `-`/`.`
/// followed by a digit.
fn ends_token(v: &[u8], end: usize) -> bool {
    match v.get(end) {
        Some(&b) if is_alnum(b) => false,
        Some(b'-' | b'.') => !v.get(end + 1).is_some_and(u8::is_ascii_digit),
        None | Some(_) => true,
    }
}

/// A 256-entry membership table: alphanumerics and `extra`.
const fn alnum_and(extra: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 128 {
        t[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
}

/// Bytes of an email's local part (one load per byte instead of a chain of
/// range tests: these loops are the detector's cost on a column of
/// addresses).
static EMAIL_LOCAL: [bool; 256] = alnum_and(b"._%+-");

/// Classes of an email's domain bytes, for the one pass over a domain.
const NOT_DOMAIN: u8 = 0;
const DOMAIN_DOT: u8 = 1;
const DOMAIN_LABEL: u8 = 2;
static EMAIL_DOMAIN: [u8; 256] = {
    let mut t = [NOT_DOMAIN; 256];
    let member = alnum_and(b"-");
    let mut b = 0;
    while b < 256 {
        if member[b] {
            t[b] = DOMAIN_LABEL;
        }
        b += 1;
    }
    t[b'.' as usize] = DOMAIN_DOT;
    t
};
/// The first `needle` in `v`. A short value (most column values are) is
/// searched eight bytes at a time in a register, which costs less than
/// `memchr`'s dispatch and set-up; a longer one goes to `memchr`.
fn find_byte(needle: u8, v: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    if v.len() >= 32 {
        return memchr::memchr(needle, v);
    }
    let pattern = LO * u64::from(needle);
    let mut chunks = v.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ pattern;
        // The lowest set bit marks the first zero byte of `x` (a borrow
        // can only mark bytes above a true zero).
        let zero = x.wrapping_sub(LO) & !x & HI;
        if zero != 0 {
            return Some(base + (zero.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == needle)
        .map(|p| base + p)
}

fn scan_email(v: &[u8], push: &mut impl FnMut(usize, usize)) {
    let is_local = |b: u8| EMAIL_LOCAL[usize::from(b)];
    let mut last_end = 0;
    let mut from = 0;
    while let Some(found) = find_byte(b'@', &v[from..]) {
        let at = from + found;
        from = at + 1;
        if at < last_end {
            continue;
        }
        // The local part: back from the `@` over local bytes (not past the
        // last match), less leading dots.
        let mut start = at;
        while start > last_end && is_local(v[start - 1]) {
            start -= 1;
        }
        while start < at && v[start] == b'.' {
            start += 1;
        }
        if start == at {
            continue;
        }
        // The domain, in one pass that also notes whether a dot starts it
        // or follows another (an empty label, unless only trailing dots,
        // trimmed below, make it: rare enough to test again then).
        let mut end = at + 1;
        let mut after_dot = true;
        let mut empty_label = false;
        while let Some(&b) = v.get(end) {
            let class = EMAIL_DOMAIN[usize::from(b)];
            if class == NOT_DOMAIN {
                break;
            }
            let dot = class == DOMAIN_DOT;
            empty_label |= dot & after_dot;
            after_dot = dot;
            end += 1;
        }
        while end > at + 1 && matches!(v[end - 1], b'.' | b'-') {
            end -= 1;
        }
        // The top-level label: two or more letters after the domain's last
        // dot (back from the end over letters, which must stop at a dot).
        let mut tld = end;
        while tld > at + 1 && v[tld - 1].is_ascii_alphabetic() {
            tld -= 1;
        }
        if end - tld < 2 || tld <= at + 1 || v[tld - 1] != b'.' {
            continue;
        }
        // No empty label: the (trimmed) domain neither starts with a dot
        // nor has two in a row.
        let domain = &v[at + 1..end];
        if !empty_label || (domain[0] != b'.' && !domain.windows(2).any(|w| w == b"..")) {
            push(start, end);
            last_end = end;
        }
    }
}

fn luhn(digits: impl DoubleEndedIterator<Item = u8>) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.rev().enumerate() {
        let mut d = u32::from(d);
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

/// Digit groups of a run starting at `i`: `(start, end)` byte ranges,
/// separated by exactly one of `seps`.
fn digit_groups(
    v: &[u8],
    mut i: usize,
    seps: &[u8],
    groups: &mut [(usize, usize)],
) -> (usize, usize) {
    let mut n = 0;
    loop {
        let start = i;
        while i < v.len() && v[i].is_ascii_digit() {
            i += 1;
        }
        if n < groups.len() {
            groups[n] = (start, i);
            n += 1;
        }
        if i + 1 < v.len() && seps.contains(&v[i]) && v[i + 1].is_ascii_digit() && n < groups.len()
        {
            i += 1;
        } else {
            return (n, i);
        }
    }
}

// Index arithmetic over digit groups reads best with short names.
#[allow(clippy::many_single_char_names)]
fn scan_card(v: &[u8], push: &mut impl FnMut(usize, usize)) {
    let mut i = 0;
    let mut groups = [(0usize, 0usize); 24];
    while i < v.len() {
        if !v[i].is_ascii_digit() || !starts_token(v, i) {
            i += 1;
            continue;
        }
        let (n, run_end) = digit_groups(v, i, b" -", &mut groups);
        let groups = &groups[..n];
        let mut s = 0;
        while s < n {
            let mut found = None;
            let mut count = 0;
            // Longest first: collect candidate ends then test from the back.
            let mut e = s;
            while e < n {
                count += groups[e].1 - groups[e].0;
                if count > 19 {
                    break;
                }
                if count >= 13 {
                    let (a, b) = (groups[s].0, groups[e].1);
                    let digits = v[a..b]
                        .iter()
                        .filter(|d| d.is_ascii_digit())
                        .map(|d| d - b'0');
                    if luhn(digits) && (e + 1 < n || ends_token(v, b)) {
                        found = Some(e);
                    }
                }
                e += 1;
            }
            if let Some(e) = found {
                push(groups[s].0, groups[e].1);
                s = e + 1;
            } else {
                s += 1;
            }
        }
        i = run_end.max(i + 1);
    }
}

fn parse_digits(v: &[u8]) -> u32 {
    v.iter().fold(0, |acc, d| acc * 10 + u32::from(d - b'0'))
}

fn scan_ssn(v: &[u8], push: &mut impl FnMut(usize, usize)) {
    let mut i = 0;
    while i + 11 <= v.len() {
        let w = &v[i..i + 11];
        let sep = w[3];
        let shaped = (sep == b'-' || sep == b' ')
            && w[6] == sep
            && w[..3].iter().all(u8::is_ascii_digit)
            && w[4..6].iter().all(u8::is_ascii_digit)
            && w[7..].iter().all(u8::is_ascii_digit);
        if shaped && starts_token(v, i) && ends_token(v, i + 11) {
            let area = parse_digits(&w[..3]);
            let group = parse_digits(&w[4..6]);
            let serial = parse_digits(&w[7..]);
            if area != 0 && area != 666 && area < 900 && group != 0 && serial != 0 {
                push(i, i + 11);
                i += 11;
                continue;
            }
        }
        i += 1;
    }
}

fn iban_valid(chars: impl Iterator<Item = u8> + Clone) -> bool {
    // Move the first four characters to the end, letters count as 10..35.
    let head = chars.clone().take(4);
    let rest = chars.skip(4);
    let mut r: u32 = 0;
    for c in rest.chain(head) {
        if c.is_ascii_digit() {
            r = (r * 10 + u32::from(c - b'0')) % 97;
        } else {
            r = (r * 100 + u32::from(c - b'A') + 10) % 97;
        }
    }
    r == 1
}

fn scan_iban(v: &[u8], push: &mut impl FnMut(usize, usize)) {
    let mut i = 0;
    while i + 4 <= v.len() {
        let head = v[i].is_ascii_uppercase()
            && v[i + 1].is_ascii_uppercase()
            && v[i + 2].is_ascii_digit()
            && v[i + 3].is_ascii_digit();
        if !head || !starts_token(v, i) {
            i += 1;
            continue;
        }
        // Collect characters; a single space is allowed every 4 characters.
        let mut j = i;
        let mut count = 0usize;
        let mut ends: [usize; 10] = [0; 10];
        let mut n_ends = 0;
        while j < v.len() && count < 34 {
            let c = v[j];
            if c.is_ascii_uppercase() || c.is_ascii_digit() {
                count += 1;
                j += 1;
            } else if c == b' '
                && count.is_multiple_of(4)
                && j + 1 < v.len()
                && (v[j + 1].is_ascii_uppercase() || v[j + 1].is_ascii_digit())
            {
                if n_ends < ends.len() {
                    ends[n_ends] = j;
                    n_ends += 1;
                }
                j += 1;
            } else {
                break;
            }
        }
        let full = Some(j).filter(|&j| ends_token(v, j));
        let mut matched = None;
        for end in full.into_iter().chain(ends[..n_ends].iter().rev().copied()) {
            let chars = v[i..end].iter().copied().filter(|&c| c != b' ');
            let len = chars.clone().count();
            if (15..=34).contains(&len) && iban_valid(chars) {
                matched = Some(end);
                break;
            }
        }
        if let Some(end) = matched {
            push(i, end);
            i = end;
        } else {
            i += 1;
        }
    }
}

fn scan_phone(v: &[u8], push: &mut impl FnMut(usize, usize)) {
    let mut last_end = 0;
    for plus in memchr_iter(b'+', v) {
        if plus < last_end || before(v, plus).is_some_and(is_alnum) {
            continue;
        }
        let mut j = plus + 1;
        // "+(1) 555" is unusual; E.164 starts with the country code digit.
        if !v.get(j).is_some_and(|b| (b'1'..=b'9').contains(b)) {
            continue;
        }
        let mut digits = 0;
        let mut last_digit = j;
        loop {
            while j < v.len() && v[j].is_ascii_digit() {
                digits += 1;
                j += 1;
                last_digit = j;
            }
            let mut k = j;
            while k < v.len() && k - j < 2 && matches!(v[k], b' ' | b'-' | b'.' | b'(' | b')') {
                k += 1;
            }
            if k > j && k < v.len() && v[k].is_ascii_digit() && digits <= 15 {
                j = k;
            } else {
                break;
            }
        }
        if (8..=15).contains(&digits) && !v.get(last_digit).is_some_and(|&b| is_alnum(b)) {
            push(plus, last_digit);
            last_end = last_digit;
        }
    }
}

fn scan_ipv4(v: &[u8], push: &mut impl FnMut(usize, usize)) {
    let mut i = 0;
    while i < v.len() {
        if !v[i].is_ascii_digit() || !(i == 0 || !(is_alnum(v[i - 1]) || v[i - 1] == b'.')) {
            i += 1;
            continue;
        }
        let mut j = i;
        let mut ok = true;
        for octet in 0..4 {
            let s = j;
            while j < v.len() && j - s < 3 && v[j].is_ascii_digit() {
                j += 1;
            }
            if j == s || parse_digits(&v[s..j]) > 255 || (j < v.len() && v[j].is_ascii_digit()) {
                ok = false;
                break;
            }
            if octet < 3 {
                if j < v.len() && v[j] == b'.' {
                    j += 1;
                } else {
                    ok = false;
                    break;
                }
            }
        }
        let bounded = j >= v.len()
            || !(is_alnum(v[j]) || (v[j] == b'.' && v.get(j + 1).is_some_and(u8::is_ascii_digit)));
        if ok && bounded {
            push(i, j);
            i = j;
        } else {
            // Skip the rest of this digit run.
            while i < v.len() && v[i].is_ascii_digit() {
                i += 1;
            }
        }
    }
}

fn scan_ipv6(v: &[u8], push: &mut impl FnMut(usize, usize)) {
    let is_tok = |b: u8| b.is_ascii_hexdigit() || b == b':' || b == b'.';
    let mut last_end = 0;
    for colon in memchr_iter(b':', v) {
        if colon < last_end {
            continue;
        }
        let mut start = colon;
        while start > 0 && is_tok(v[start - 1]) {
            start -= 1;
        }
        let mut end = colon + 1;
        while end < v.len() && is_tok(v[end]) {
            end += 1;
        }
        last_end = end;
        if before(v, start).is_some_and(is_alnum) || v.get(end).is_some_and(|&b| is_alnum(b)) {
            continue;
        }
        let mut tok = &v[start..end];
        while tok.last() == Some(&b'.') {
            tok = &tok[..tok.len() - 1];
        }
        let colons = memchr_iter(b':', tok).count();
        if colons < 2 || !tok.iter().any(u8::is_ascii_hexdigit) {
            continue;
        }
        // The token is ASCII by construction.
        let text = std::str::from_utf8(tok).unwrap_or_default();
        if Ipv6Addr::from_str(text).is_ok() {
            push(start, start + tok.len());
        }
    }
}

fn scan_jwt(v: &[u8], push: &mut impl FnMut(usize, usize)) {
    let is_b64 = |b: u8| is_alnum(b) || b == b'-' || b == b'_';
    let seg = |from: usize| {
        let mut j = from;
        while j < v.len() && is_b64(v[j]) {
            j += 1;
        }
        j
    };
    let mut last_end = 0;
    for i in memmem::find_iter(v, b"eyJ") {
        if i < last_end || before(v, i).is_some_and(|b| is_b64(b) || b == b'.') {
            continue;
        }
        let h = seg(i);
        if h - i < 10 || v.get(h) != Some(&b'.') {
            continue;
        }
        let p = seg(h + 1);
        if p - (h + 1) < 2 || v.get(p) != Some(&b'.') {
            continue;
        }
        let s = seg(p + 1);
        push(i, s);
        last_end = s;
    }
}

fn scan_aws(v: &[u8], push: &mut impl FnMut(usize, usize)) {
    for i in memchr_iter(b'A', v) {
        if i + 20 > v.len() {
            break;
        }
        let prefix = &v[i..i + 4];
        if !matches!(prefix, b"AKIA" | b"ASIA" | b"ABIA" | b"ACCA") {
            continue;
        }
        let body_ok = v[i + 4..i + 20]
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if body_ok
            && !before(v, i).is_some_and(is_alnum)
            && !v.get(i + 20).is_some_and(|&b| is_alnum(b))
        {
            push(i, i + 20);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::Strategy;

    #[test]
    fn digits_are_counted_as_a_byte_loop_counts_them() {
        // Every byte value, and lengths around the 255-byte lanes.
        let all: Vec<u8> = (0..=255u8).collect();
        assert_eq!(count_digits(&all), 10);
        for len in [0, 1, 254, 255, 256, 510, 511, 1000] {
            let v: Vec<u8> = (0..len).map(|i| (i * 7 % 256) as u8).collect();
            let naive = v.iter().filter(|b| b.is_ascii_digit()).count();
            assert_eq!(count_digits(&v), naive, "length {len}");
            let digits = vec![b'7'; len];
            assert_eq!(count_digits(&digits), len);
        }
    }

    fn set(kinds: &[BuiltinDetector]) -> DetectorSet {
        DetectorSet::new(&[DetectorRule {
            name: "r".into(),
            detectors: kinds.iter().map(|&k| DetectorKind::Builtin(k)).collect(),
            strategy: Strategy::Redact,
            keep_last: 0,
        }])
        .unwrap()
    }

    fn found(kind: BuiltinDetector, text: &str) -> Vec<String> {
        let s = set(&[kind]);
        let mut out = Vec::new();
        s.find(text.as_bytes(), &mut out);
        out.iter()
            .map(|m| text[m.start..m.end].to_owned())
            .collect()
    }

    use BuiltinDetector::*;

    #[test]
    fn email() {
        assert_eq!(
            found(Email, "mail bob.smith+x@example.co.uk now"),
            ["bob.smith+x@example.co.uk"]
        );
        assert_eq!(found(Email, "<a@b.io>, c@d.org."), ["a@b.io", "c@d.org"]);
        assert!(found(Email, "user@localhost and @handle and a@b.c and x@.com").is_empty());
        assert!(found(Email, "no at sign here").is_empty());
    }

    #[test]
    fn find_byte_finds_the_first_occurrence_at_every_length_and_position() {
        for len in 0..80 {
            for at in 0..=len {
                let mut v: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                // A byte one above and one below the needle never match.
                if len > 0 {
                    v[(at + 1) % len] = b'@' + 1;
                    v[(at + 2) % len] = b'@' - 1;
                }
                if at < len {
                    v[at] = b'@';
                    // A later one does not count.
                    if at + 3 < len {
                        v[at + 3] = b'@';
                    }
                }
                let expected = v.iter().position(|&b| b == b'@');
                assert_eq!(find_byte(b'@', &v), expected, "len {len} at {at}");
                // High bytes around it (the borrow case).
                let w: Vec<u8> = v
                    .iter()
                    .map(|&b| if b == b'@' { b } else { 0x80 | b })
                    .collect();
                assert_eq!(
                    find_byte(b'@', &w),
                    expected,
                    "len {len} at {at}, high bytes"
                );
            }
        }
        assert_eq!(find_byte(0, &[1, 0, 0]), Some(1));
        assert_eq!(find_byte(0xff, &[0xfe; 9]), None);
    }

    #[test]
    fn email_labels() {
        assert!(found(Email, "a@.b.com").is_empty());
        assert!(found(Email, "a@b..com").is_empty());
        assert!(found(Email, "x a@b..c.com y").is_empty());
        assert_eq!(found(Email, "a@b.c.com."), ["a@b.c.com"]);
        assert_eq!(found(Email, "a@b.com.-"), ["a@b.com"]);
    }

    /// The email scanner as it was before its domain became one pass (a
    /// position, a trim, a last-dot search and a pairwise empty-label test):
    /// the reference the one-pass scanner must agree with.
    fn scan_email_reference(v: &[u8]) -> Vec<(usize, usize)> {
        let local = alnum_and(b"._%+-");
        let domain_byte = alnum_and(b".-");
        let mut found = Vec::new();
        let mut last_end = 0;
        let mut from = 0;
        while let Some(p) = v[from..].iter().position(|&b| b == b'@') {
            let at = from + p;
            from = at + 1;
            if at < last_end {
                continue;
            }
            let mut start = v[last_end..at]
                .iter()
                .rposition(|&b| !local[usize::from(b)])
                .map_or(last_end, |p| last_end + p + 1);
            while start < at && v[start] == b'.' {
                start += 1;
            }
            if start == at {
                continue;
            }
            let mut end = v[at + 1..]
                .iter()
                .position(|&b| !domain_byte[usize::from(b)])
                .map_or(v.len(), |p| at + 1 + p);
            while end > at + 1 && matches!(v[end - 1], b'.' | b'-') {
                end -= 1;
            }
            let domain = &v[at + 1..end];
            let Some(dot) = domain.iter().rposition(|&b| b == b'.') else {
                continue;
            };
            let tld = &domain[dot + 1..];
            let labels_ok = domain.first() != Some(&b'.') && !domain.windows(2).any(|w| w == b"..");
            if tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic) && labels_ok {
                found.push((start, end));
                last_end = end;
            }
        }
        found
    }

    #[test]
    fn the_one_pass_email_scanner_agrees_with_the_reference() {
        // Texts of pieces an address's edges turn on: labels, top-level
        // labels, digits, every local and domain punctuation, `@`, dots
        // alone and doubled, a space, a non-ASCII byte and a byte no rule
        // names. Short texts find the corner cases; longer ones the
        // interplay of several addresses.
        let pieces: [&[u8]; 25] = [
            b"a",
            b"bob",
            b"Zq",
            b"com",
            b"io",
            b"c",
            b"9",
            b"07",
            b".",
            b"..",
            b"-",
            b"_",
            b"%",
            b"+",
            b"@",
            b"@",
            b" ",
            b"\xc3\xa9",
            b"/",
            b".-",
            b"x.y",
            b"@ex.com",
            b"@b.io",
            b"u1@example.org",
            b".de",
        ];
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        let mut matched = 0;
        for round in 0..200_000 {
            let len = if round % 4 == 0 { 24 } else { 8 };
            let n = g.next(len) as usize + 1;
            let text: Vec<u8> = (0..n)
                .flat_map(|_| pieces[g.next(pieces.len() as u64) as usize].iter().copied())
                .collect();
            let mut got = Vec::new();
            scan_email(&text, &mut |a, b| got.push((a, b)));
            let want = scan_email_reference(&text);
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(&text));
            matched += usize::from(!want.is_empty());
        }
        // The texts must exercise matches, not only misses.
        assert!(matched > 20_000, "only {matched} texts held an address");
    }

    #[test]
    fn credit_card() {
        assert_eq!(
            found(CreditCard, "card 4111 1111 1111 1111 exp"),
            ["4111 1111 1111 1111"]
        );
        assert_eq!(
            found(CreditCard, "4111-1111-1111-1111"),
            ["4111-1111-1111-1111"]
        );
        assert_eq!(found(CreditCard, "5500005555555559"), ["5500005555555559"]);
        assert_eq!(
            found(CreditCard, "order 12 4111 1111 1111 1111"),
            ["4111 1111 1111 1111"]
        );
        // Luhn failure.
        assert!(found(CreditCard, "4111 1111 1111 1112").is_empty());
        // Glued to letters or too long.
        assert!(found(CreditCard, "x4111111111111111").is_empty());
        assert!(found(CreditCard, "41111111111111110000").is_empty());
        // Two separators in a row.
        assert!(found(CreditCard, "4111  1111 1111 1111").is_empty());
        assert!(found(CreditCard, "123456789012").is_empty());
    }

    #[test]
    fn ssn() {
        assert_eq!(found(Ssn, "ssn: 123-45-6789."), ["123-45-6789"]);
        assert_eq!(found(Ssn, "123 45 6789"), ["123 45 6789"]);
        for bad in [
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "123-00-4567",
            "123-45-0000",
        ] {
            assert!(found(Ssn, bad).is_empty(), "{bad}");
        }
        assert!(found(Ssn, "123-45 6789").is_empty());
        assert!(found(Ssn, "1123-45-6789").is_empty());
        assert!(found(Ssn, "1-123-45-6789").is_empty());
        assert!(found(Ssn, "123-45-67890").is_empty());
        assert!(
            found(Ssn, "123456789").is_empty(),
            "bare nine digits are not matched"
        );
    }

    #[test]
    fn iban() {
        assert_eq!(
            found(Iban, "pay to DE89370400440532013000 now"),
            ["DE89370400440532013000"]
        );
        assert_eq!(
            found(Iban, "GB82 WEST 1234 5698 7654 32 thanks"),
            ["GB82 WEST 1234 5698 7654 32"]
        );
        assert_eq!(
            found(Iban, "DE89 3704 0044 0532 0130 00"),
            ["DE89 3704 0044 0532 0130 00"]
        );
        // Checksum failure.
        assert!(found(Iban, "DE89370400440532013001").is_empty());
        assert!(found(Iban, "GB82 WEST 1234 5698 7654 33").is_empty());
        assert!(found(Iban, "AB12").is_empty());
    }

    #[test]
    fn phone() {
        assert_eq!(found(Phone, "call +14155552671 now"), ["+14155552671"]);
        assert_eq!(found(Phone, "+44 20 7946 0958"), ["+44 20 7946 0958"]);
        assert_eq!(found(Phone, "+1 (555) 123-4567"), ["+1 (555) 123-4567"]);
        assert!(found(Phone, "+1234567").is_empty(), "7 digits");
        assert!(found(Phone, "+1234567890123456").is_empty(), "16 digits");
        assert!(found(Phone, "2+2=4 and a+14155552671").is_empty());
        assert!(found(Phone, "+0123456789").is_empty());
    }

    #[test]
    fn ipv4() {
        assert_eq!(
            found(Ipv4, "from 10.0.0.5 and 192.168.1.255."),
            ["10.0.0.5", "192.168.1.255"]
        );
        assert!(found(Ipv4, "256.1.1.1").is_empty());
        assert!(found(Ipv4, "1.2.3.999").is_empty());
        assert!(found(Ipv4, "1.2.3").is_empty());
        assert!(found(Ipv4, "1.2.3.4.5").is_empty());
        assert!(found(Ipv4, "v1.2.3.4").is_empty());
    }

    #[test]
    fn ipv6() {
        assert_eq!(found(Ipv6, "addr 2001:db8::1 ok"), ["2001:db8::1"]);
        assert_eq!(
            found(Ipv6, "[fe80::1ff:fe23:4567:890a]:5432"),
            ["fe80::1ff:fe23:4567:890a"]
        );
        assert_eq!(found(Ipv6, "::ffff:10.0.0.1"), ["::ffff:10.0.0.1"]);
        assert!(found(Ipv6, "at 12:30:45 today").is_empty());
        assert!(found(Ipv6, "std::vector").is_empty());
        assert!(found(Ipv6, "mac 00:1a:2b:3c:4d:5e").is_empty());
    }

    #[test]
    fn jwt() {
        let t =
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(found(Jwt, &format!("Bearer {t}")), [t]);
        assert!(found(Jwt, "eyJhbGciOiJIUzI1NiJ9 not a token").is_empty());
        assert!(found(Jwt, "xeyJhbGciOiJIUzI1NiJ9.eyJzdWIi.abc").is_empty());
    }

    #[test]
    fn aws() {
        assert_eq!(
            found(AwsAccessKey, "key=AKIAIOSFODNN7EXAMPLE;"),
            ["AKIAIOSFODNN7EXAMPLE"]
        );
        assert_eq!(
            found(AwsAccessKey, "ASIAY34FZKBOKMUTVV7A"),
            ["ASIAY34FZKBOKMUTVV7A"]
        );
        assert!(found(AwsAccessKey, "AKIAIOSFODNN7EXAMPLEX").is_empty());
        assert!(found(AwsAccessKey, "AKIAiosfodnn7example").is_empty());
        assert!(found(AwsAccessKey, "AKIDIOSFODNN7EXAMPLE").is_empty());
    }

    #[test]
    fn custom_and_overlaps() {
        let s = DetectorSet::new(&[DetectorRule {
            name: "r".into(),
            detectors: vec![
                DetectorKind::Builtin(Ipv6),
                DetectorKind::Builtin(Ipv4),
                DetectorKind::Custom {
                    name: "emp".into(),
                    regex: regex::Regex::new(r"EMP-\d{5}").unwrap(),
                },
            ],
            strategy: Strategy::Redact,
            keep_last: 0,
        }])
        .unwrap();
        let mut out = Vec::new();
        let text = "EMP-12345 at ::ffff:10.0.0.1";
        s.find(text.as_bytes(), &mut out);
        let names: Vec<_> = out
            .iter()
            .map(|m| (&text[m.start..m.end], &**s.name(m.detector)))
            .collect();
        assert_eq!(names, [("EMP-12345", "emp"), ("::ffff:10.0.0.1", "ipv6")]);
    }

    #[test]
    fn nothing_found_does_not_allocate() {
        let s = set(&BuiltinDetector::ALL);
        let mut out = Vec::new();
        s.find(b"just an ordinary sentence with 42 words: fine.", &mut out);
        assert!(out.is_empty());
        assert_eq!(out.capacity(), 0);
    }

    /// A small deterministic generator (xorshift), so the test needs no
    /// dependency and fails the same way every run.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self, below: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % below
        }
    }

    /// Texts as PostgreSQL prints `date`, `timestamp` and `timestamptz` in
    /// each `DateStyle` (ISO, SQL, Postgres, German), with fractions,
    /// numeric and named zones, BC, and the years at the types' limits.
    fn temporal_texts(g: &mut Gen) -> Vec<String> {
        let mut out = vec!["infinity".to_owned(), "-infinity".to_owned()];
        let days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
        let months = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let zones = [
            "",
            "+00",
            "+05:30",
            "-03",
            "+14",
            "+10:30:15",
            "-09:30",
            " PST",
            " CEST",
            " UTC",
            " +10",
            " -0330",
            " LMT",
        ];
        for _ in 0..20_000 {
            // `timestamp` ends in 294276 AD, `date` in 5874897 AD: only a
            // date has seven-digit years (a time after one would make a
            // 13-digit run, which is why the bound matters).
            let year = match g.next(3) {
                0 => 1 + g.next(99),
                1 => 1000 + g.next(9000),
                _ => 294_276 - g.next(10),
            };
            let date_year = 5_874_897 - g.next(10);
            let (mo, d) = (1 + g.next(12), 1 + g.next(28));
            let (h, mi, s) = (g.next(24), g.next(60), g.next(60));
            let frac = match g.next(3) {
                0 => String::new(),
                1 => format!(".{:02}", g.next(100)),
                _ => format!(".{:06}", g.next(1_000_000)),
            };
            let zone = zones[g.next(zones.len() as u64) as usize];
            let bc = if g.next(5) == 0 { " BC" } else { "" };
            let day = days[g.next(7) as usize];
            let month = months[(mo - 1) as usize];
            let time = format!("{h:02}:{mi:02}:{s:02}{frac}");
            out.extend([
                format!("{date_year}-{mo:02}-{d:02}{bc}"),
                format!("{mo:02}/{d:02}/{date_year}{bc}"),
                format!("{mo:02}-{d:02}-{date_year}{bc}"),
                format!("{d:02}.{mo:02}.{date_year}{bc}"),
                format!("{year:04}-{mo:02}-{d:02}{bc}"),
                format!("{year:04}-{mo:02}-{d:02} {time}{zone}{bc}"),
                format!("{mo:02}/{d:02}/{year:04}{bc}"),
                format!("{d:02}/{mo:02}/{year:04} {time}{zone}{bc}"),
                format!("{mo:02}-{d:02}-{year:04}{bc}"),
                format!("{day} {month} {d:02} {time} {year:04}{zone}{bc}"),
                format!("{day} {d:02} {month} {time} {year:04}{zone}{bc}"),
                format!("{d:02}.{mo:02}.{year:04}{bc}"),
                format!("{d:02}.{mo:02}.{year:04} {time}{zone}{bc}"),
            ]);
        }
        out
    }

    #[test]
    fn narrow_contents_never_match() {
        let all = [
            Email,
            CreditCard,
            Ssn,
            Iban,
            Phone,
            Ipv4,
            Ipv6,
            Jwt,
            AwsAccessKey,
        ];
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        let integers = |g: &mut Gen, digits: u32| -> Vec<String> {
            let max = 10i128.pow(digits) - 1;
            let mut v: Vec<String> = [0, 1, -1, max, -max]
                .iter()
                .map(ToString::to_string)
                .collect();
            for _ in 0..20_000 {
                let len = 1 + g.next(u64::from(digits)) as u32;
                let n = i128::from(g.next(u64::MAX)) % 10i128.pow(len);
                v.push(if g.next(2) == 0 { n } else { -n }.to_string());
            }
            v
        };
        let cases: Vec<(ValueContent, Vec<String>)> = vec![
            (
                ValueContent::Boolean,
                ["t", "f", "true", "false", "0", "1"]
                    .map(String::from)
                    .to_vec(),
            ),
            (ValueContent::Integer { digits: 5 }, integers(&mut g, 5)),
            (ValueContent::Integer { digits: 10 }, integers(&mut g, 10)),
            (ValueContent::Integer { digits: 19 }, integers(&mut g, 19)),
            (ValueContent::Temporal, temporal_texts(&mut g)),
        ];
        let mut out = Vec::new();
        for (content, values) in &cases {
            for kind in all {
                let s = set(&[kind]);
                if s.can_match(*content) {
                    continue;
                }
                for v in values {
                    s.find(v.as_bytes(), &mut out);
                    assert!(
                        out.is_empty(),
                        "{kind:?} found {out:?} in {content:?} {v:?}"
                    );
                }
            }
        }
        // The skip is narrow: a card number fits in a bigint, a custom
        // pattern can match anything, and text is always scanned.
        let card = set(&[CreditCard]);
        assert!(card.can_match(ValueContent::Integer { digits: 19 }));
        assert!(!card.can_match(ValueContent::Integer { digits: 10 }));
        assert_eq!(found(CreditCard, "4111111111111111"), ["4111111111111111"]);
        for kind in all {
            assert!(set(&[kind]).can_match(ValueContent::Any));
        }
        let custom = DetectorSet::new(&[DetectorRule {
            name: "r".into(),
            detectors: vec![DetectorKind::Custom {
                name: "digits".into(),
                regex: regex::Regex::new("[0-9]+").unwrap(),
            }],
            strategy: Strategy::Redact,
            keep_last: 0,
        }])
        .unwrap();
        assert!(custom.can_match(ValueContent::Boolean));
        assert!(custom.can_match(ValueContent::Temporal));
    }
}
