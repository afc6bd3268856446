//! Identity, certificates, mutual TLS and HBONE: the pieces every mesh proxy shares.
#![forbid(unsafe_code)]

mod ca;
mod cert;
pub mod csr;
mod identity;
mod manager;
mod tls;
mod tunnel;

pub use ca::{CaError, DEFAULT_LIFETIME, FileCa, MAX_LIFETIME, SignedCsr, load_roots};
pub use cert::{CertError, WorkloadCertificate, identity_of, pem_certificate, validity_of};
pub use csr::CsrError;
pub use identity::{DEFAULT_SERVICE_ACCOUNT, DEFAULT_TRUST_DOMAIN, IdentityError, SpiffeId};
pub use manager::{CertManager, CertificateSource, IssueError, LocalCa};
pub use tls::{
    ALPN_H2, CertHandle, TlsError, TrustRoots, client_config, peer_identity, provider,
    server_config, server_name,
};
pub use tunnel::client::{ClientError, Connection};
pub use tunnel::copy::{
    CopyError, H2Stream, Transferred, copy_bidirectional, copy_bidirectional_until, reset_tcp,
};
pub use tunnel::io::StreamIo;
pub use tunnel::pool::{Dialer, Pool, PoolError, PoolKey};
pub use tunnel::server::{
    ConnectHandler, InboundConnect, PeerInfo, Responder, ServerError, serve_connection,
    serve_connection_until,
};
pub use tunnel::settings::H2Settings;
pub use tunnel::target::{Target, TargetError};

/// The HBONE port.
pub const HBONE_PORT: u16 = 15008;
