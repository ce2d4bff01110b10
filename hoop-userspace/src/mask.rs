//! Masking: content detectors, strategies, column lineage and row rewriting.
//!
//! Pure: values in, values out. The policy file names these types.

use serde::Deserialize;

/// How a masked value is rewritten (`strategy:` in a mask rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// A fixed `[REDACTED:kind]`.
    #[default]
    Redact,
    /// Keep the last `keep_last` characters and format characters; mask the rest.
    Partial,
    /// A keyed HMAC token: equal inputs give equal tokens.
    Hash,
    /// SQL NULL.
    Null,
}

/// A built-in content detector (`detect:` in a mask rule). Custom regex
/// detectors are referenced by name and defined under `policy.detectors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuiltinDetector {
    /// RFC 5322-ish addresses.
    Email,
    /// 13–19 digit card numbers, with spaces or dashes, passing Luhn.
    CreditCard,
    /// US social security numbers, `AAA-GG-SSSS`, excluding invalid areas/groups.
    Ssn,
    /// International bank account numbers with a valid mod-97 checksum.
    Iban,
    /// E.164 phone numbers (`+` and 8–15 digits).
    Phone,
    /// Dotted-quad IPv4 addresses.
    Ipv4,
    /// IPv6 addresses.
    Ipv6,
    /// JSON Web Tokens (three base64url segments, header starting `eyJ`).
    Jwt,
    /// AWS access key ids (`AKIA`/`ASIA`… + 16 characters).
    AwsAccessKey,
}
