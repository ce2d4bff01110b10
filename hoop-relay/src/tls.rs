//! TLS on both legs.
//!
//! - Client leg: hoop terminates TLS with the configured certificate when a
//!   client sends SSLRequest (and answers `N` when none is configured).
//! - Upstream leg: per `tls.upstream` (libpq's sslmode meanings): `disable`
//!   never; `prefer` tries SSLRequest and falls back to plaintext on `N`;
//!   `require` insists but does not verify the certificate; `verify-full`
//!   verifies the chain against `tls.ca_file` and the name against the
//!   original destination's IP address (hoop never learns the host name the
//!   client used).

use std::{fs::File, io::BufReader, path::Path, sync::Arc};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, ring},
    pki_types::{CertificateDer, ServerName, UnixTime},
};

use hoop_config::UpstreamTls;

/// TLS configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("could not read {path}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no certificate or no private key.
    #[error("{path} contains no {what}")]
    Missing {
        /// The file.
        path: String,
        /// `certificate` or `private key`.
        what: &'static str,
    },
    /// `verify-full` without `tls.ca_file`.
    #[error("tls.upstream is verify-full but tls.ca_file is not set")]
    NoCaFile,
    /// rustls rejected the configuration.
    #[error("invalid TLS configuration")]
    Rustls(#[from] rustls::Error),
    /// A CA certificate was rejected.
    #[error("invalid CA certificate in {path}")]
    Ca {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: rustls::Error,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let shown = path.display().to_string();
    let file = File::open(path).map_err(|source| TlsError::Read {
        path: shown.clone(),
        source,
    })?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read {
            path: shown.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::Missing {
            path: shown,
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The client-leg acceptor from a PEM certificate chain and key.
pub fn acceptor_from_pem(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let certs = read_certs(cert)?;
    let shown = key.display().to_string();
    let file = File::open(key).map_err(|source| TlsError::Read {
        path: shown.clone(),
        source,
    })?;
    let key = rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(|source| TlsError::Read {
            path: shown.clone(),
            source,
        })?
        .ok_or(TlsError::Missing {
            path: shown,
            what: "private key",
        })?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// How hoop secures the upstream leg.
#[derive(Clone)]
pub struct UpstreamTlsPolicy {
    /// The sslmode.
    pub mode: UpstreamTls,
    connector: Option<tokio_rustls::TlsConnector>,
}

impl std::fmt::Debug for UpstreamTlsPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTlsPolicy")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl UpstreamTlsPolicy {
    /// Builds the upstream policy; `ca_file` is required for `verify-full`.
    pub fn new(mode: UpstreamTls, ca_file: Option<&Path>) -> Result<Self, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let config = match mode {
            UpstreamTls::Disable => {
                return Ok(Self {
                    mode,
                    connector: None,
                });
            }
            UpstreamTls::Prefer | UpstreamTls::Require => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoCertificateVerification(provider())))
                .with_no_client_auth(),
            UpstreamTls::VerifyFull => {
                let path = ca_file.ok_or(TlsError::NoCaFile)?;
                let mut roots = RootCertStore::empty();
                for cert in read_certs(path)? {
                    roots.add(cert).map_err(|source| TlsError::Ca {
                        path: path.display().to_string(),
                        source,
                    })?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
        };
        Ok(Self {
            mode,
            connector: Some(tokio_rustls::TlsConnector::from(Arc::new(config))),
        })
    }

    /// Plaintext upstream.
    pub fn disabled() -> Self {
        Self {
            mode: UpstreamTls::Disable,
            connector: None,
        }
    }

    pub fn connector(&self) -> Option<&tokio_rustls::TlsConnector> {
        self.connector.as_ref()
    }

    pub fn server_name(addr: std::net::SocketAddr) -> ServerName<'static> {
        ServerName::IpAddress(addr.ip().into())
    }
}

/// `prefer`/`require`: encrypt, but accept any certificate (libpq's meaning).
/// Handshake signatures are still checked against the presented key.
#[derive(Debug)]
struct NoCertificateVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertificateVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
