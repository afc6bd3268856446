//! Keeps one current certificate per workload identity and renews it at half its lifetime.
//!
//! Renewal swaps the certificate inside its [`CertHandle`]: new handshakes use the new one,
//! open connections keep going. A failed renewal is retried with backoff while the old
//! certificate keeps serving, as Istio does.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use crate::ca::{CaError, FileCa};
use crate::cert::WorkloadCertificate;
use crate::identity::SpiffeId;
use crate::tls::{CertHandle, TlsError};

/// Longest wait between renewal attempts after a failure.
const MAX_RETRY: Duration = Duration::from_secs(150);

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("certificate authority refused {identity}")]
    Ca {
        identity: String,
        #[source]
        source: CaError,
    },
    #[error("issued certificate for {identity} is unusable")]
    Unusable {
        identity: String,
        #[source]
        source: TlsError,
    },
    #[error("certificate authority returned a certificate for {got}, not {wanted}")]
    WrongIdentity { wanted: String, got: String },
    #[error("remote certificate authority: {identity}")]
    Remote {
        identity: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Anything that can issue workload certificates: the local file CA or a remote CA.
pub trait CertificateSource: Send + Sync + 'static {
    fn issue<'a>(
        &'a self,
        identity: &'a SpiffeId,
    ) -> Pin<Box<dyn Future<Output = Result<WorkloadCertificate, IssueError>> + Send + 'a>>;
}

/// The file CA as a source, issuing certificates of a fixed lifetime.
pub struct LocalCa {
    pub ca: FileCa,
    pub lifetime: Duration,
}

impl CertificateSource for LocalCa {
    fn issue<'a>(
        &'a self,
        identity: &'a SpiffeId,
    ) -> Pin<Box<dyn Future<Output = Result<WorkloadCertificate, IssueError>> + Send + 'a>> {
        Box::pin(async move {
            self.ca
                .issue(identity, self.lifetime)
                .map_err(|source| IssueError::Ca {
                    identity: identity.to_string(),
                    source,
                })
        })
    }
}

/// Current certificates by identity, each with a renewal task.
pub struct CertManager {
    source: Arc<dyn CertificateSource>,
    /// Serializes issuing so that concurrent first requests for one identity issue once.
    certs: tokio::sync::Mutex<HashMap<SpiffeId, CertHandle>>,
    this: Weak<CertManager>,
}

impl std::fmt::Debug for CertManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertManager").finish_non_exhaustive()
    }
}

impl CertManager {
    pub fn new(source: Arc<dyn CertificateSource>) -> Arc<CertManager> {
        Arc::new_cyclic(|this| CertManager {
            source,
            certs: tokio::sync::Mutex::new(HashMap::new()),
            this: this.clone(),
        })
    }

    /// The handle for `identity`, issuing its first certificate if there is none yet.
    pub async fn fetch(&self, identity: &SpiffeId) -> Result<CertHandle, IssueError> {
        let mut certs = self.certs.lock().await;
        if let Some(h) = certs.get(identity) {
            return Ok(h.clone());
        }
        let cert = issue_checked(self.source.as_ref(), identity).await?;
        let handle = CertHandle::new(cert).map_err(|source| IssueError::Unusable {
            identity: identity.to_string(),
            source,
        })?;
        certs.insert(identity.clone(), handle.clone());
        tracing::info!(identity = %identity, expires = %fmt_time(handle.certificate().not_after()), "certificate issued");
        tokio::spawn(renew(self.this.clone(), handle.clone()));
        Ok(handle)
    }

    /// Every identity's current certificate.
    pub async fn certificates(&self) -> Vec<WorkloadCertificate> {
        self.certs
            .lock()
            .await
            .values()
            .map(|h| h.certificate())
            .collect()
    }
}

async fn issue_checked(
    source: &dyn CertificateSource,
    identity: &SpiffeId,
) -> Result<WorkloadCertificate, IssueError> {
    let cert = source.issue(identity).await?;
    if cert.identity() != identity {
        return Err(IssueError::WrongIdentity {
            wanted: identity.to_string(),
            got: cert.identity().to_string(),
        });
    }
    Ok(cert)
}

async fn renew(manager: Weak<CertManager>, handle: CertHandle) {
    let mut retry = Duration::from_secs(1);
    let mut at = handle.certificate().refresh_at();
    loop {
        let wait = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait).await;
        let Some(manager) = manager.upgrade() else {
            return;
        };
        let id = handle.identity().clone();
        let result = issue_checked(manager.source.as_ref(), &id)
            .await
            .and_then(|cert| {
                handle.replace(cert).map_err(|source| IssueError::Unusable {
                    identity: id.to_string(),
                    source,
                })
            });
        match result {
            Ok(()) => {
                let cert = handle.certificate();
                tracing::info!(identity = %id, expires = %fmt_time(cert.not_after()), "certificate renewed");
                at = cert.refresh_at();
                retry = Duration::from_secs(1);
            }
            Err(e) => {
                tracing::warn!(identity = %id, error = %e, retry_in = ?retry, "certificate renewal failed; still serving the current one");
                at = SystemTime::now() + retry;
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
    }
}

/// RFC 3339-ish UTC time for logs.
pub(crate) fn fmt_time(t: SystemTime) -> String {
    let odt: time::OffsetDateTime = t.into();
    odt.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("{t:?}"))
}
