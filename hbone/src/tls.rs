//! rustls configuration for HBONE: TLS 1.3 only, AES-GCM suites, ALPN `h2`, mutual
//! authentication by SPIFFE identity.
//!
//! Rules, in the order they are applied:
//! 1. Both sides present a workload certificate and chain it to the mesh trust roots.
//! 2. The server accepts a client only if the client's identity is in the server's trust
//!    domain; which identities may do what is authorization's job, later.
//! 3. The client accepts a server only if the server's identity is one the destination is
//!    expected to have. DNS names and SNI play no part (the client sends no SNI).
//!
//! Every refusal is logged with the reason, since a TLS alert alone tells an operator nothing.

use std::sync::{Arc, OnceLock, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    RootCertStore, ServerConfig, SignatureScheme,
};

use crate::cert::{CertError, WorkloadCertificate, identity_of};
use crate::identity::SpiffeId;

/// The ALPN protocol HBONE speaks.
pub const ALPN_H2: &[u8] = b"h2";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no usable trust root")]
    Roots(#[source] rustls::Error),
    #[error("building the client certificate verifier failed")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    #[error("TLS configuration rejected")]
    Config(#[source] rustls::Error),
    #[error(transparent)]
    Cert(#[from] CertError),
}

/// The crypto provider: ring, restricted to the TLS 1.3 AES-GCM suites Istio uses.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let base = rustls::crypto::ring::default_provider();
            Arc::new(CryptoProvider {
                cipher_suites: vec![
                    rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
                    rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
                ],
                ..base
            })
        })
        .clone()
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    provider().signature_verification_algorithms
}

/// The mesh trust roots, shared by every config built from them.
#[derive(Clone, Debug)]
pub struct TrustRoots(Arc<RootCertStore>);

impl TrustRoots {
    pub fn new(roots: &[CertificateDer<'static>]) -> Result<Self, TlsError> {
        let mut store = RootCertStore::empty();
        for r in roots {
            store.add(r.clone()).map_err(TlsError::Roots)?;
        }
        Ok(TrustRoots(Arc::new(store)))
    }
}

/// The current certificate of one identity. Swapped in place on renewal: handshakes after the
/// swap present the new certificate, established connections are untouched.
#[derive(Clone)]
pub struct CertHandle {
    identity: SpiffeId,
    current: Arc<RwLock<Current>>,
}

struct Current {
    cert: WorkloadCertificate,
    key: Arc<CertifiedKey>,
}

impl std::fmt::Debug for CertHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertHandle")
            .field("identity", &self.identity.to_string())
            .finish()
    }
}

impl CertHandle {
    pub fn new(cert: WorkloadCertificate) -> Result<Self, TlsError> {
        let key = cert.certified_key()?;
        Ok(CertHandle {
            identity: cert.identity().clone(),
            current: Arc::new(RwLock::new(Current { cert, key })),
        })
    }

    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }

    /// Replaces the certificate. It must be for the same identity.
    pub fn replace(&self, cert: WorkloadCertificate) -> Result<(), TlsError> {
        if cert.identity() != &self.identity {
            return Err(TlsError::Cert(CertError::BadIdentity(
                crate::identity::IdentityError::Shape(cert.identity().to_string()),
            )));
        }
        let key = cert.certified_key()?;
        let mut cur = self.current.write().unwrap_or_else(|p| p.into_inner());
        *cur = Current { cert, key };
        Ok(())
    }

    /// A copy of the certificate now in use.
    pub fn certificate(&self) -> WorkloadCertificate {
        self.read().cert.clone()
    }

    fn key(&self) -> Arc<CertifiedKey> {
        self.read().key.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Current> {
        // A panic while holding the lock cannot leave `Current` half-written (one assignment).
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug)]
struct CertResolver(CertHandle);

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.key())
    }
}

impl ResolvesClientCert for CertResolver {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Server side of HBONE: presents `cert`, requires a client certificate chained to `roots`
/// whose identity is in `cert`'s trust domain.
pub fn server_config(cert: CertHandle, roots: &TrustRoots) -> Result<Arc<ServerConfig>, TlsError> {
    let inner = WebPkiClientVerifier::builder_with_provider(roots.0.clone(), provider())
        .build()
        .map_err(TlsError::Verifier)?;
    let verifier = TrustDomainVerifier {
        inner,
        trust_domain: cert.identity().trust_domain().to_string(),
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(CertResolver(cert)));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Client side of HBONE: presents `cert`, accepts only a server chained to `roots` whose
/// identity is one of `expected`.
pub fn client_config(
    cert: CertHandle,
    roots: &TrustRoots,
    expected: Vec<SpiffeId>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let verifier = ExpectedIdentityVerifier {
        roots: roots.0.clone(),
        expected,
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(CertResolver(cert)));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.enable_sni = false;
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// The identity a peer proved in a finished handshake.
pub fn peer_identity(conn: &rustls::CommonState) -> Option<SpiffeId> {
    conn.peer_certificates()
        .and_then(|c| c.first())
        .and_then(|leaf| identity_of(leaf).ok())
}

/// The server name rustls needs; never sent (SNI is off) and never checked (our verifier).
pub fn server_name(ip: std::net::IpAddr) -> ServerName<'static> {
    ServerName::IpAddress(ip.into())
}

fn refuse(reason: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(PeerRejected(
        reason,
    )))))
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct PeerRejected(String);

#[derive(Debug)]
struct TrustDomainVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    trust_domain: String,
}

impl ClientCertVerifier for TrustDomainVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let identity = identity_of(end_entity);
        let shown = identity
            .as_ref()
            .map(|i| i.to_string())
            .unwrap_or_else(|e| format!("<{e}>"));
        if let Err(e) = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            tracing::warn!(peer = %shown, error = %e, "refused client certificate: chain does not verify against the mesh roots");
            return Err(e);
        }
        let identity = identity.map_err(|e| {
            tracing::warn!(error = %e, "refused client certificate: no workload identity");
            refuse(e.to_string())
        })?;
        if identity.trust_domain() != self.trust_domain {
            let reason = format!(
                "client identity {identity} is not in trust domain {:?}",
                self.trust_domain
            );
            tracing::warn!(peer = %identity, "refused client certificate: {reason}");
            return Err(refuse(reason));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[derive(Debug)]
struct ExpectedIdentityVerifier {
    roots: Arc<RootCertStore>,
    expected: Vec<SpiffeId>,
}

impl ServerCertVerifier for ExpectedIdentityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let identity = identity_of(end_entity);
        let shown = identity
            .as_ref()
            .map(|i| i.to_string())
            .unwrap_or_else(|e| format!("<{e}>"));
        let parsed = ParsedCertificate::try_from(end_entity)?;
        if let Err(e) = rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            algorithms().all,
        ) {
            tracing::warn!(peer = %shown, error = %e, "refused server certificate: chain does not verify against the mesh roots");
            return Err(e);
        }
        let identity = identity.map_err(|e| {
            tracing::warn!(error = %e, "refused server certificate: no workload identity");
            refuse(e.to_string())
        })?;
        if !self.expected.contains(&identity) {
            let expected: Vec<String> = self.expected.iter().map(|i| i.to_string()).collect();
            let reason = format!("server identity {identity} is not one of {expected:?}");
            tracing::warn!(peer = %identity, "refused server certificate: {reason}");
            return Err(refuse(reason));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}
