//! HandshakeV10 (S), SSLRequest (C), HandshakeResponse41 (C)
//!
//! The connection phase up to authentication: the server's greeting, the
//! client's optional SSLRequest, and its response with user, auth data,
//! schema, plugin and connection attributes.
//!
//! hoop relays the server's *own* greeting and the client's *own*
//! response; the only change it makes is to capability bits
//! ([`Greeting::with_capabilities`], [`HandshakeResponse::with_capabilities`]).
//! So both views keep every byte they parsed, reserved and filler bytes
//! included, and re-encode byte for byte: `encode(parse(x)) == x`.

use bytes::{BufMut, Bytes, BytesMut};

use crate::capabilities::Capabilities;
use crate::err::ErrPacket;
use crate::wire::{MessageError, Reader, put_cstr, put_lenenc_bytes};

/// The only protocol version this codec speaks (4.1+ servers).
pub const PROTOCOL_VERSION: u8 = 10;

/// Bytes in an SSLRequest, and in the fixed head of a HandshakeResponse41.
pub const SSL_REQUEST_LEN: usize = 32;

/// Where MariaDB's extended capabilities sit in the greeting's 10 reserved bytes.
const GREETING_EXT_CAPS: std::ops::Range<usize> = 6..10;
/// Where MariaDB's extended client capabilities sit in the response's
/// 23-byte filler (bytes 28..32 of the payload).
const RESPONSE_EXT_CAPS: std::ops::Range<usize> = 19..23;

/// The server's flavour and version, from the greeting's version string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerVersion {
    /// MariaDB (its version string names it), else MySQL or a compatible server.
    pub mariadb: bool,
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version.
    pub patch: u32,
}

impl ServerVersion {
    /// Parses a greeting's version string: `8.0.36`, `10.11.19-MariaDB-0+deb12u1`,
    /// or MariaDB's replication-compatible `5.5.5-10.11.19-MariaDB…` (the
    /// `5.5.5-` prefix is dropped, as clients do).
    pub fn parse(version: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(version).ok()?;
        let mariadb = text.contains("MariaDB");
        let text = if mariadb {
            text.strip_prefix("5.5.5-").unwrap_or(text)
        } else {
            text
        };
        let mut parts = text.splitn(3, '.');
        let number = |s: Option<&str>| -> Option<u32> {
            let s = s?;
            let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            s[..end].parse().ok()
        };
        Some(Self {
            mariadb,
            major: number(parts.next())?,
            minor: number(parts.next())?,
            patch: number(parts.next())?,
        })
    }

    /// The version as the server's `MYSQL_VERSION_ID` (what executable
    /// comments compare with): 10.11.19 is 101119, 8.0.36 is 80036.
    pub fn version_id(&self) -> u32 {
        self.major
            .saturating_mul(10_000)
            .saturating_add(self.minor.saturating_mul(100))
            .saturating_add(self.patch)
    }
}

/// HandshakeV10 (S): the server's greeting, as a validated owned view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// Protocol version (always [`PROTOCOL_VERSION`]).
    pub protocol_version: u8,
    /// The version string, verbatim (MariaDB's `5.5.5-` prefix included).
    pub server_version: Bytes,
    /// The connection (thread) id: what `KILL` names.
    pub thread_id: u32,
    /// The first 8 bytes of the scramble.
    pub scramble_1: [u8; 8],
    /// The byte after the first scramble part (0).
    pub filler: u8,
    /// Capability flags: low and high halves, plus MariaDB's extended flags
    /// when bit 0 is clear.
    pub capabilities: Capabilities,
    /// The server's default collation id.
    pub collation: u8,
    /// Server status flags.
    pub status: u16,
    /// The declared length of the whole scramble (plugin data), or 0.
    pub auth_data_len: u8,
    /// The 10 reserved bytes as sent (on MariaDB the last 4 hold the
    /// extended capabilities; they are rewritten from `capabilities`).
    pub reserved: [u8; 10],
    /// The rest of the scramble (with its trailing NUL, when sent).
    pub scramble_2: Bytes,
    /// The default authentication plugin, when `PLUGIN_AUTH` is set.
    pub auth_plugin: Option<Bytes>,
    /// Whether the plugin name was NUL-terminated (MySQL 5.5.7–5.5.9 omit it).
    pub plugin_terminated: bool,
}

impl Greeting {
    /// Parses a greeting payload. An ERR packet in its place (too many
    /// connections, host blocked) is [`ServerHello::Error`]; see
    /// [`ServerHello::parse`].
    pub fn parse(payload: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(payload);
        let protocol_version = r.u8("greeting protocol version")?;
        if protocol_version != PROTOCOL_VERSION {
            return Err(MessageError::Unsupported {
                what: "a greeting of a protocol version other than 10 (pre-4.1 server)",
            });
        }
        let server_version = Bytes::copy_from_slice(r.cstr("greeting server version")?);
        let thread_id = r.u32("greeting thread id")?;
        let scramble_1 = r.array("greeting scramble part 1")?;
        let filler = r.u8("greeting filler")?;
        let low = r.u16("greeting capabilities")?;
        let collation = r.u8("greeting collation")?;
        let status = r.u16("greeting status")?;
        let high = r.u16("greeting capabilities (upper)")?;
        let auth_data_len = r.u8("greeting auth data length")?;
        let reserved: [u8; 10] = r.array("greeting reserved bytes")?;
        let standard = u32::from(low) | u32::from(high) << 16;
        let standard_caps = Capabilities::from_parts(standard, 0);
        if !standard_caps.contains(Capabilities::PROTOCOL_41) {
            return Err(MessageError::Unsupported {
                what: "a server without CLIENT_PROTOCOL_41",
            });
        }
        let ext = if standard_caps.has_mariadb_extensions() {
            u32::from_le_bytes([reserved[6], reserved[7], reserved[8], reserved[9]])
        } else {
            0
        };
        let capabilities = Capabilities::from_parts(standard, ext);
        let scramble_2 = if capabilities.contains(Capabilities::SECURE_CONNECTION) {
            let n = usize::from(auth_data_len).saturating_sub(8).max(13);
            Bytes::copy_from_slice(r.bytes(n, "greeting scramble part 2")?)
        } else {
            Bytes::new()
        };
        let (auth_plugin, plugin_terminated) = if capabilities.contains(Capabilities::PLUGIN_AUTH) {
            if r.is_empty() {
                return Err(MessageError::Truncated {
                    field: "greeting auth plugin",
                });
            }
            let (name, terminated) = r.cstr_or_rest();
            (Some(Bytes::copy_from_slice(name)), terminated)
        } else {
            (None, false)
        };
        r.finish("greeting")?;
        Ok(Self {
            protocol_version,
            server_version,
            thread_id,
            scramble_1,
            filler,
            capabilities,
            collation,
            status,
            auth_data_len,
            reserved,
            scramble_2,
            auth_plugin,
            plugin_terminated,
        })
    }

    /// The server's flavour and version, when the version string reads as one.
    pub fn server(&self) -> Option<ServerVersion> {
        ServerVersion::parse(&self.server_version)
    }

    /// The whole scramble (nonce) the client signs: both parts, without the
    /// trailing NUL.
    pub fn scramble(&self) -> Vec<u8> {
        let mut s = self.scramble_1.to_vec();
        let part_2 = match self.scramble_2.split_last() {
            Some((0, head)) => head,
            _ => &self.scramble_2[..],
        };
        s.extend_from_slice(part_2);
        s
    }

    /// Encodes the greeting; byte for byte the parsed payload when nothing changed.
    pub fn encode(&self) -> Result<Bytes, MessageError> {
        let mut out = BytesMut::with_capacity(64 + self.server_version.len());
        out.put_u8(self.protocol_version);
        put_cstr(&mut out, &self.server_version, "greeting server version")?;
        out.put_u32_le(self.thread_id);
        out.put_slice(&self.scramble_1);
        out.put_u8(self.filler);
        let standard = self.capabilities.standard();
        out.put_u16_le(standard as u16);
        out.put_u8(self.collation);
        out.put_u16_le(self.status);
        out.put_u16_le((standard >> 16) as u16);
        out.put_u8(self.auth_data_len);
        let mut reserved = self.reserved;
        if self.capabilities.has_mariadb_extensions() {
            reserved[GREETING_EXT_CAPS].copy_from_slice(&self.capabilities.mariadb().to_le_bytes());
        }
        out.put_slice(&reserved);
        if self.capabilities.contains(Capabilities::SECURE_CONNECTION) {
            out.put_slice(&self.scramble_2);
        }
        if self.capabilities.contains(Capabilities::PLUGIN_AUTH) {
            let name = self.auth_plugin.as_deref().unwrap_or_default();
            if self.plugin_terminated {
                put_cstr(&mut out, name, "greeting auth plugin")?;
            } else {
                out.put_slice(name);
            }
        }
        Ok(out.freeze())
    }

    /// The greeting with `capabilities` instead of its own, every other byte
    /// unchanged. Clearing `SECURE_CONNECTION` or `PLUGIN_AUTH` drops the
    /// fields they announce; hoop never clears those.
    pub fn with_capabilities(&self, capabilities: Capabilities) -> Result<Bytes, MessageError> {
        let mut g = self.clone();
        g.capabilities = capabilities;
        g.encode()
    }

    /// The greeting with the bits of `mask` cleared.
    pub fn with_cleared(&self, mask: Capabilities) -> Result<Bytes, MessageError> {
        self.with_capabilities(self.capabilities.without(mask))
    }
}

/// The server's first packet: a greeting, or an ERR instead of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerHello {
    /// HandshakeV10.
    Greeting(Box<Greeting>),
    /// ERR before the handshake (too many connections, host blocked). It
    /// carries no SQLSTATE; relay it and close.
    Error(ErrPacket),
}

impl ServerHello {
    /// Parses the server's first packet.
    pub fn parse(payload: &[u8]) -> Result<Self, MessageError> {
        match payload.first() {
            Some(&crate::err::ERR_HEADER) => {
                // No capabilities are agreed yet: the SQLSTATE marker, if any,
                // is recognised by its '#'.
                Ok(Self::Error(ErrPacket::parse(payload)?))
            }
            Some(_) => Ok(Self::Greeting(Box::new(Greeting::parse(payload)?))),
            None => Err(MessageError::Empty {
                message: "greeting",
            }),
        }
    }
}

/// SSLRequest (C): the first 32 bytes of a HandshakeResponse41, sent in the
/// clear before the TLS handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SslRequest {
    /// Client capability flags (with `SSL`; MariaDB's extended flags from
    /// bytes 28..32).
    pub capabilities: Capabilities,
    /// The largest packet the client accepts.
    pub max_packet_size: u32,
    /// The client's collation id (its character set).
    pub collation: u8,
    /// The 23 filler bytes as sent (MariaDB's extended flags in the last 4).
    pub filler: [u8; 23],
}

impl SslRequest {
    fn parse_head(r: &mut Reader<'_>) -> Result<Self, MessageError> {
        let standard = r.u32("client capabilities")?;
        let max_packet_size = r.u32("client max packet size")?;
        let collation = r.u8("client collation")?;
        let filler: [u8; 23] = r.array("client filler")?;
        let ext = u32::from_le_bytes([filler[19], filler[20], filler[21], filler[22]]);
        let capabilities = Capabilities::from_parts(standard, ext);
        if !capabilities.contains(Capabilities::PROTOCOL_41) {
            return Err(MessageError::Unsupported {
                what: "a HandshakeResponse320 (a client without CLIENT_PROTOCOL_41)",
            });
        }
        Ok(Self {
            capabilities,
            max_packet_size,
            collation,
            filler,
        })
    }

    /// Parses an SSLRequest payload (exactly 32 bytes, `SSL` set).
    pub fn parse(payload: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(payload);
        let head = Self::parse_head(&mut r)?;
        r.finish("SSLRequest")?;
        if !head.capabilities.contains(Capabilities::SSL) {
            return Err(MessageError::InvalidValue {
                field: "SSLRequest capabilities (CLIENT_SSL clear)",
                value: u64::from(head.capabilities.standard()),
            });
        }
        Ok(head)
    }

    fn put(&self, out: &mut BytesMut) {
        out.put_u32_le(self.capabilities.standard());
        out.put_u32_le(self.max_packet_size);
        out.put_u8(self.collation);
        let mut filler = self.filler;
        filler[RESPONSE_EXT_CAPS].copy_from_slice(&self.capabilities.mariadb().to_le_bytes());
        out.put_slice(&filler);
    }

    /// Encodes the 32-byte SSLRequest.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(SSL_REQUEST_LEN);
        self.put(&mut out);
        out.freeze()
    }
}

/// How the response carries the auth data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthDataEncoding {
    /// A length-encoded string (`PLUGIN_AUTH_LENENC_CLIENT_DATA`).
    LengthEncoded,
    /// A one-byte length (`SECURE_CONNECTION`).
    OneByteLength,
    /// NUL-terminated (neither flag: pre-4.1 authentication).
    NulTerminated,
}

impl AuthDataEncoding {
    /// The encoding the client's flags select.
    pub fn for_capabilities(caps: Capabilities) -> Self {
        if caps.contains(Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA) {
            Self::LengthEncoded
        } else if caps.contains(Capabilities::SECURE_CONNECTION) {
            Self::OneByteLength
        } else {
            Self::NulTerminated
        }
    }
}

/// Connection attributes: key/value pairs the client describes itself with
/// (`_client_name`, `_pid`, `program_name`…): audit identity.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectAttributes {
    /// The pairs, in the order sent (bytes in the client's character set).
    pub pairs: Vec<(Bytes, Bytes)>,
}

impl ConnectAttributes {
    /// Parses the attribute block (a length-encoded total, then
    /// length-encoded keys and values).
    pub fn parse(r: &mut Reader<'_>) -> Result<Self, MessageError> {
        let block = r.lenenc_bytes("connection attributes")?;
        let mut inner = Reader::new(block);
        let mut pairs = Vec::new();
        while !inner.is_empty() {
            let key = inner.lenenc_bytes("connection attribute name")?;
            let value = inner.lenenc_bytes("connection attribute value")?;
            pairs.push((Bytes::copy_from_slice(key), Bytes::copy_from_slice(value)));
        }
        Ok(Self { pairs })
    }

    /// The value of attribute `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.pairs
            .iter()
            .find(|(k, _)| k.as_ref() == key.as_bytes())
            .map(|(_, v)| v.as_ref())
    }

    fn put(&self, out: &mut BytesMut) {
        let mut block = BytesMut::new();
        for (k, v) in &self.pairs {
            put_lenenc_bytes(&mut block, k);
            put_lenenc_bytes(&mut block, v);
        }
        put_lenenc_bytes(out, &block);
    }
}

/// HandshakeResponse41 (C), as a validated owned view.
///
/// Trailing fields the flags announce (schema, plugin, attributes, zstd
/// level) may be missing at the end of the payload, as servers accept; a
/// missing field is `None` and stays missing when re-encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeResponse {
    /// The fixed head: flags, max packet size, collation, filler.
    pub head: SslRequest,
    /// The user name (bytes in the client's character set).
    pub user: Bytes,
    /// The auth data (the plugin's first answer to the scramble).
    pub auth_data: Bytes,
    /// The schema to start in (`CONNECT_WITH_DB`).
    pub database: Option<Bytes>,
    /// The client's auth plugin (`PLUGIN_AUTH`).
    pub auth_plugin: Option<Bytes>,
    /// Whether the plugin name was NUL-terminated.
    pub plugin_terminated: bool,
    /// Connection attributes (`CONNECT_ATTRS`).
    pub attributes: Option<ConnectAttributes>,
    /// The zstd compression level (`ZSTD_COMPRESSION_ALGORITHM`).
    pub zstd_level: Option<u8>,
}

impl HandshakeResponse {
    /// Parses a HandshakeResponse41 payload.
    pub fn parse(payload: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(payload);
        let head = SslRequest::parse_head(&mut r)?;
        let caps = head.capabilities;
        let user = Bytes::copy_from_slice(r.cstr("response user")?);
        let auth_data = match AuthDataEncoding::for_capabilities(caps) {
            AuthDataEncoding::LengthEncoded => r.lenenc_bytes("response auth data")?,
            AuthDataEncoding::OneByteLength => {
                let n = r.u8("response auth data length")?;
                r.bytes(usize::from(n), "response auth data")?
            }
            AuthDataEncoding::NulTerminated => r.cstr("response auth data")?,
        };
        let auth_data = Bytes::copy_from_slice(auth_data);
        let database = if caps.contains(Capabilities::CONNECT_WITH_DB) && !r.is_empty() {
            Some(Bytes::copy_from_slice(r.cstr("response database")?))
        } else {
            None
        };
        let (auth_plugin, plugin_terminated) =
            if caps.contains(Capabilities::PLUGIN_AUTH) && !r.is_empty() {
                let (name, terminated) = r.cstr_or_rest();
                (Some(Bytes::copy_from_slice(name)), terminated)
            } else {
                (None, true)
            };
        let attributes = if caps.contains(Capabilities::CONNECT_ATTRS) && !r.is_empty() {
            Some(ConnectAttributes::parse(&mut r)?)
        } else {
            None
        };
        let zstd_level = if caps.contains(Capabilities::ZSTD_COMPRESSION_ALGORITHM) && !r.is_empty()
        {
            Some(r.u8("response zstd level")?)
        } else {
            None
        };
        r.finish("HandshakeResponse41")?;
        Ok(Self {
            head,
            user,
            auth_data,
            database,
            auth_plugin,
            plugin_terminated,
            attributes,
            zstd_level,
        })
    }

    /// The client's capability flags.
    pub fn capabilities(&self) -> Capabilities {
        self.head.capabilities
    }

    /// Encodes the response with the layout its flags select; byte for
    /// byte the parsed payload when nothing changed. Fields whose flag is
    /// clear are left out.
    pub fn encode(&self) -> Result<Bytes, MessageError> {
        let caps = self.head.capabilities;
        let mut out = BytesMut::with_capacity(64 + self.user.len() + self.auth_data.len());
        self.head.put(&mut out);
        put_cstr(&mut out, &self.user, "response user")?;
        match AuthDataEncoding::for_capabilities(caps) {
            AuthDataEncoding::LengthEncoded => put_lenenc_bytes(&mut out, &self.auth_data),
            AuthDataEncoding::OneByteLength => {
                let n =
                    u8::try_from(self.auth_data.len()).map_err(|_| MessageError::DoesNotFit {
                        field: "response auth data",
                        detail: "more than 255 bytes without PLUGIN_AUTH_LENENC_CLIENT_DATA",
                    })?;
                out.put_u8(n);
                out.put_slice(&self.auth_data);
            }
            AuthDataEncoding::NulTerminated => {
                put_cstr(&mut out, &self.auth_data, "response auth data")?;
            }
        }
        // Optional fields are positional: one left out ends the packet.
        let mut open = true;
        if caps.contains(Capabilities::CONNECT_WITH_DB) {
            match &self.database {
                Some(db) => put_cstr(&mut out, db, "response database")?,
                None => open = false,
            }
        }
        if open && caps.contains(Capabilities::PLUGIN_AUTH) {
            match &self.auth_plugin {
                Some(p) if self.plugin_terminated => put_cstr(&mut out, p, "response plugin")?,
                Some(p) => {
                    out.put_slice(p);
                    open = false;
                }
                None => open = false,
            }
        }
        if open && caps.contains(Capabilities::CONNECT_ATTRS) {
            match &self.attributes {
                Some(a) => a.put(&mut out),
                None => open = false,
            }
        }
        if open
            && caps.contains(Capabilities::ZSTD_COMPRESSION_ALGORITHM)
            && let Some(level) = self.zstd_level
        {
            out.put_u8(level);
        }
        Ok(out.freeze())
    }

    /// The response with `capabilities` instead of the client's own (the
    /// standard flags, and MariaDB's extended flags in bytes 28..32), every
    /// other field unchanged. Clearing `ZSTD_COMPRESSION_ALGORITHM` drops
    /// the level byte.
    pub fn with_capabilities(&self, capabilities: Capabilities) -> Result<Bytes, MessageError> {
        let mut r = self.clone();
        r.head.capabilities = capabilities;
        r.encode()
    }

    /// The response with the bits of `mask` cleared.
    pub fn with_cleared(&self, mask: Capabilities) -> Result<Bytes, MessageError> {
        self.with_capabilities(self.head.capabilities.without(mask))
    }

    /// The SSLRequest this client would send before this response (its own
    /// head with `SSL` set): what hoop sends upstream when it speaks TLS to
    /// the server but the client did not ask for TLS.
    pub fn ssl_request(&self) -> SslRequest {
        let mut head = self.head;
        head.capabilities = head.capabilities.union(Capabilities::SSL);
        head
    }
}

/// The client's first packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHello {
    /// SSLRequest: TLS follows, then the full response.
    SslRequest(SslRequest),
    /// The full response.
    Response(Box<HandshakeResponse>),
}

impl ClientHello {
    /// Parses the client's answer to the greeting (or the packet after TLS).
    pub fn parse(payload: &[u8]) -> Result<Self, MessageError> {
        if payload.len() == SSL_REQUEST_LEN {
            SslRequest::parse(payload).map(Self::SslRequest)
        } else {
            HandshakeResponse::parse(payload).map(|r| Self::Response(Box::new(r)))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::put_lenenc_int;

    /// A MariaDB 10.11 greeting as measured on the test server.
    pub(crate) fn mariadb_greeting() -> Vec<u8> {
        greeting_with(
            b"5.5.5-10.11.19-MariaDB-0+deb12u1",
            Capabilities::from_parts(0xF7FE_F7FE | 1 << 19 | 1 << 15, 0x1D),
        )
    }

    pub(crate) fn greeting_with(version: &[u8], caps: Capabilities) -> Vec<u8> {
        let mut g = vec![10];
        g.extend_from_slice(version);
        g.push(0);
        g.extend_from_slice(&42u32.to_le_bytes());
        g.extend_from_slice(b"abcdefgh\0");
        g.extend_from_slice(&(caps.standard() as u16).to_le_bytes());
        g.push(45);
        g.extend_from_slice(&2u16.to_le_bytes());
        g.extend_from_slice(&((caps.standard() >> 16) as u16).to_le_bytes());
        g.push(21);
        g.extend_from_slice(&[0; 6]);
        g.extend_from_slice(&caps.mariadb().to_le_bytes());
        g.extend_from_slice(b"ijklmnopqrst\0");
        g.extend_from_slice(b"mysql_native_password\0");
        g
    }

    #[test]
    fn greeting_round_trips_and_clears_bits_in_place() {
        let raw = mariadb_greeting();
        let g = Greeting::parse(&raw).unwrap();
        assert_eq!(&g.server_version[..], b"5.5.5-10.11.19-MariaDB-0+deb12u1");
        let v = g.server().unwrap();
        assert!(v.mariadb);
        assert_eq!(v.version_id(), 101_119);
        assert_eq!(g.thread_id, 42);
        assert_eq!(g.scramble(), b"abcdefghijklmnopqrst");
        assert_eq!(
            g.auth_plugin.as_deref(),
            Some(&b"mysql_native_password"[..])
        );
        assert!(
            g.capabilities
                .contains(Capabilities::MARIADB_CACHE_METADATA)
        );
        assert_eq!(&g.encode().unwrap()[..], &raw[..]);

        let cleared = g
            .with_cleared(Capabilities::COMPRESS | Capabilities::MARIADB_CACHE_METADATA)
            .unwrap();
        assert_eq!(cleared.len(), raw.len());
        let diff: Vec<usize> = (0..raw.len()).filter(|&i| raw[i] != cleared[i]).collect();
        let caps_low = 1 + 33 + 4 + 9;
        let ext = caps_low + 2 + 1 + 2 + 2 + 1 + 6;
        assert_eq!(diff, vec![caps_low, ext], "only the two flag bytes change");
        let again = Greeting::parse(&cleared).unwrap();
        assert!(!again.capabilities.contains(Capabilities::COMPRESS));
        assert!(
            !again
                .capabilities
                .contains(Capabilities::MARIADB_CACHE_METADATA)
        );
        assert!(again.capabilities.contains(Capabilities::MARIADB_PROGRESS));

        let plugin_at = raw.len() - b"mysql_native_password\0".len();
        for cut in 0..=plugin_at {
            assert!(Greeting::parse(&raw[..cut]).is_err(), "cut at {cut}");
        }
        // The last byte is the plugin's NUL, which old servers omit.
        let g = Greeting::parse(&raw[..raw.len() - 1]).unwrap();
        assert!(!g.plugin_terminated);
        assert_eq!(&g.encode().unwrap()[..], &raw[..raw.len() - 1]);
    }

    #[test]
    fn mysql_greeting_has_no_extended_flags() {
        // Bit 0 (CLIENT_LONG_PASSWORD) set: the reserved bytes are not flags.
        let mut raw = greeting_with(
            b"8.0.36-0ubuntu0.22.04.1-log",
            Capabilities::from_parts(0xFFFF_F7FF, 0),
        );
        // Something in the reserved bytes must not be read as flags.
        let reserved_at = 1 + 28 + 4 + 9 + 2 + 1 + 2 + 2 + 1;
        raw[reserved_at + 6] = 0x1D;
        let g = Greeting::parse(&raw).unwrap();
        assert_eq!(g.capabilities.mariadb(), 0);
        assert_eq!(&g.encode().unwrap()[..], &raw[..]);
        let v = ServerVersion::parse(b"8.0.36-0ubuntu0.22.04.1-log").unwrap();
        assert_eq!((v.mariadb, v.version_id()), (false, 80036));
    }

    #[test]
    fn an_error_instead_of_a_greeting() {
        let raw = b"\xff\x10\x04Too many connections";
        match ServerHello::parse(raw).unwrap() {
            ServerHello::Error(e) => {
                assert_eq!(e.code, 1040);
                assert_eq!(e.sql_state, None);
                assert_eq!(&e.message[..], b"Too many connections");
            }
            ServerHello::Greeting(_) => panic!("an error"),
        }
        assert!(ServerHello::parse(b"").is_err());
        assert!(Greeting::parse(b"\x09").is_err());
    }

    pub(crate) fn response(zstd: bool) -> Vec<u8> {
        let mut caps = Capabilities::PROTOCOL_41
            | Capabilities::SECURE_CONNECTION
            | Capabilities::PLUGIN_AUTH
            | Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA
            | Capabilities::CONNECT_WITH_DB
            | Capabilities::CONNECT_ATTRS
            | Capabilities::COMPRESS
            | Capabilities::MARIADB_PROGRESS
            | Capabilities::MARIADB_CACHE_METADATA;
        if zstd {
            caps = caps | Capabilities::ZSTD_COMPRESSION_ALGORITHM;
        }
        let mut p = caps.standard().to_le_bytes().to_vec();
        p.extend_from_slice(&(16u32 << 20).to_le_bytes());
        p.push(45);
        p.extend_from_slice(&[0; 19]);
        p.extend_from_slice(&caps.mariadb().to_le_bytes());
        p.extend_from_slice(b"root\0");
        p.push(20);
        p.extend_from_slice(&[7; 20]);
        p.extend_from_slice(b"shop\0mysql_native_password\0");
        let mut attrs = Vec::new();
        for (k, v) in [("_client_name", "libmariadb"), ("program_name", "mariadb")] {
            put_lenenc_int(&mut attrs, k.len() as u64);
            attrs.extend_from_slice(k.as_bytes());
            put_lenenc_int(&mut attrs, v.len() as u64);
            attrs.extend_from_slice(v.as_bytes());
        }
        put_lenenc_int(&mut p, attrs.len() as u64);
        p.extend_from_slice(&attrs);
        if zstd {
            p.push(3);
        }
        p
    }

    #[test]
    fn response_round_trips_and_clears_flags() {
        let raw = response(true);
        let r = match ClientHello::parse(&raw).unwrap() {
            ClientHello::Response(r) => r,
            ClientHello::SslRequest(_) => panic!("a response"),
        };
        assert_eq!(&r.user[..], b"root");
        assert_eq!(r.auth_data.len(), 20);
        assert_eq!(r.database.as_deref(), Some(&b"shop"[..]));
        let attrs = r.attributes.as_ref().unwrap();
        assert_eq!(attrs.get("program_name"), Some(&b"mariadb"[..]));
        assert_eq!(r.zstd_level, Some(3));
        assert_eq!(&r.encode().unwrap()[..], &raw[..]);

        let cleared = r
            .with_cleared(
                Capabilities::COMPRESS
                    | Capabilities::ZSTD_COMPRESSION_ALGORITHM
                    | Capabilities::MARIADB_CACHE_METADATA,
            )
            .unwrap();
        assert_eq!(cleared.len(), raw.len() - 1, "the zstd level is dropped");
        let again = HandshakeResponse::parse(&cleared).unwrap();
        assert_eq!(again.zstd_level, None);
        assert!(
            again
                .capabilities()
                .contains(Capabilities::MARIADB_PROGRESS)
        );
        assert!(
            !again
                .capabilities()
                .contains(Capabilities::MARIADB_CACHE_METADATA)
        );
        assert_eq!(
            (again.user, again.attributes),
            (r.user.clone(), r.attributes.clone())
        );

        for cut in [0, 10, 31, 33, 37, 50] {
            assert!(HandshakeResponse::parse(&raw[..cut]).is_err(), "cut {cut}");
        }
        // A response that ends after the plugin name is valid.
        let short = &raw[..raw.len() - 47];
        let r = HandshakeResponse::parse(short).unwrap();
        assert!(r.attributes.is_none());
        assert_eq!(&r.encode().unwrap()[..], short);
    }

    #[test]
    fn ssl_request_is_the_response_head() {
        let raw = response(false);
        let r = HandshakeResponse::parse(&raw).unwrap();
        let ssl = r.ssl_request().encode();
        assert_eq!(ssl.len(), SSL_REQUEST_LEN);
        let parsed = match ClientHello::parse(&ssl).unwrap() {
            ClientHello::SslRequest(s) => s,
            ClientHello::Response(_) => panic!("an SSLRequest"),
        };
        assert!(parsed.capabilities.contains(Capabilities::SSL));
        assert_eq!(&ssl[4..], &raw[4..32]);
        let mut no_ssl = ssl.to_vec();
        no_ssl[1] &= !0x08;
        assert!(ClientHello::parse(&no_ssl).is_err());
    }

    #[test]
    fn long_auth_data_needs_the_lenenc_flag() {
        let raw = response(false);
        let mut r = HandshakeResponse::parse(&raw).unwrap();
        r.auth_data = Bytes::from(vec![1; 300]);
        assert!(r.encode().is_ok());
        assert!(
            r.with_cleared(Capabilities::PLUGIN_AUTH_LENENC_CLIENT_DATA)
                .is_err()
        );
    }
}
