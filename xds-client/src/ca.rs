//! Certificates from a remote CA (istiod's or meshd's `IstioCertificateService`): a fresh key
//! and CSR per request, the chain checked to carry the identity asked for.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::GrpcTarget;
use hbone::{CertificateSource, IssueError, SpiffeId, WorkloadCertificate};
use proto::citadel::IstioCertificateRequest;
use proto::citadel::istio_certificate_service_client::IstioCertificateServiceClient;

#[derive(Debug, thiserror::Error)]
pub enum RemoteCaError {
    #[error("creating the CSR")]
    Csr(#[source] hbone::CsrError),
    #[error(transparent)]
    Channel(#[from] crate::ChannelError),
    #[error("CA refused: {0}")]
    Refused(tonic::Status),
    #[error("CA response: {0}")]
    Response(String),
}

/// `CreateCertificate` against `target`, impersonating pods when `impersonate` (node proxy).
pub struct RemoteCa {
    pub target: GrpcTarget,
    pub lifetime: Duration,
    /// Shared mode: ask for pods' identities with `ImpersonatedIdentity`. Dedicated mode does
    /// not (the CSR's SAN is the identity).
    pub impersonate: bool,
}

impl RemoteCa {
    async fn request(&self, identity: &SpiffeId) -> Result<WorkloadCertificate, RemoteCaError> {
        let (csr, key) = hbone::csr::generate(identity).map_err(RemoteCaError::Csr)?;
        let metadata = self.impersonate.then(|| prost_types::Struct {
            fields: [(
                "ImpersonatedIdentity".to_string(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue(identity.to_string())),
                },
            )]
            .into(),
        });
        let request = self.target.request(IstioCertificateRequest {
            csr,
            validity_duration: self.lifetime.as_secs() as i64,
            metadata,
        })?;
        let channel = crate::connect(&self.target).await?;
        let response = IstioCertificateServiceClient::new(channel)
            .create_certificate(request)
            .await
            .map_err(RemoteCaError::Refused)?
            .into_inner();
        chain_from_response(&response.cert_chain, key)
    }
}

/// The response's PEMs (leaf first, root last) as a workload certificate; the root is not
/// part of what a peer is sent.
pub fn chain_from_response(
    pems: &[String],
    key_pkcs8: Vec<u8>,
) -> Result<WorkloadCertificate, RemoteCaError> {
    let mut chain = Vec::new();
    for pem in pems {
        for c in rustls_pemfile::certs(&mut pem.as_bytes()) {
            chain.push(c.map_err(|e| RemoteCaError::Response(format!("bad PEM: {e}")))?);
        }
    }
    if chain.len() > 1 {
        chain.pop();
    }
    if chain.is_empty() {
        return Err(RemoteCaError::Response(
            "no certificate in cert_chain".into(),
        ));
    }
    WorkloadCertificate::new(chain, key_pkcs8)
        .map_err(|e| RemoteCaError::Response(format!("unusable certificate: {e}")))
}

impl CertificateSource for RemoteCa {
    fn issue<'a>(
        &'a self,
        identity: &'a SpiffeId,
    ) -> Pin<Box<dyn Future<Output = Result<WorkloadCertificate, IssueError>> + Send + 'a>> {
        Box::pin(async move {
            self.request(identity)
                .await
                .map_err(|e| IssueError::Remote {
                    identity: identity.to_string(),
                    source: Box::new(e),
                })
        })
    }
}
