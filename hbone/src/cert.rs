//! Workload certificates: a leaf whose URI SAN is the workload's SPIFFE ID, its chain, and
//! its private key; plus the few facts we read back out of DER (identity, validity).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use x509_parser::extensions::GeneralName;

use crate::identity::{IdentityError, SpiffeId};

/// Why a certificate could not be used or read.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate is not valid DER X.509: {0}")]
    Parse(String),
    #[error("certificate has no SPIFFE URI SAN")]
    NoIdentity,
    #[error("certificate has {0} SPIFFE URI SANs; a workload certificate has exactly one")]
    ManyIdentities(usize),
    #[error("certificate URI SAN is not a workload identity")]
    BadIdentity(#[source] IdentityError),
    #[error("private key rejected")]
    Key(#[source] rustls::Error),
    #[error("certificate chain is empty")]
    EmptyChain,
}

/// A workload's certificate chain (leaf first, no root) and PKCS#8 private key.
#[derive(Clone)]
pub struct WorkloadCertificate {
    identity: SpiffeId,
    chain: Vec<CertificateDer<'static>>,
    key_pkcs8: Arc<Vec<u8>>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl std::fmt::Debug for WorkloadCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("WorkloadCertificate")
            .field("identity", &self.identity.to_string())
            .field("chain_len", &self.chain.len())
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish()
    }
}

impl WorkloadCertificate {
    /// Assembles a certificate from DER parts, reading identity and validity from the leaf.
    pub fn new(chain: Vec<CertificateDer<'static>>, key_pkcs8: Vec<u8>) -> Result<Self, CertError> {
        let leaf = chain.first().ok_or(CertError::EmptyChain)?;
        let identity = identity_of(leaf)?;
        let (not_before, not_after) = validity_of(leaf)?;
        Ok(WorkloadCertificate {
            identity,
            chain,
            key_pkcs8: Arc::new(key_pkcs8),
            not_before,
            not_after,
        })
    }

    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }

    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    pub fn key_pkcs8(&self) -> &[u8] {
        &self.key_pkcs8
    }

    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// When to fetch a replacement: half way through the lifetime, as Istio does.
    pub fn refresh_at(&self) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or(Duration::ZERO);
        self.not_before + lifetime / 2
    }

    /// Reads a chain (leaf first) and a PKCS#8 key from PEM text.
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let chain: Result<Vec<_>, _> = rustls_pemfile::certs(&mut chain_pem.as_bytes()).collect();
        let chain = chain.map_err(|e| CertError::Parse(e.to_string()))?;
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .map_err(|e| CertError::Parse(e.to_string()))?
            .ok_or_else(|| CertError::Parse("no PRIVATE KEY block".into()))?;
        match key {
            PrivateKeyDer::Pkcs8(k) => Self::new(chain, k.secret_pkcs8_der().to_vec()),
            _ => Err(CertError::Parse("private key is not PKCS#8".into())),
        }
    }

    /// The chain and key as PEM text, in the shape Istio writes them.
    pub fn to_pem(&self) -> (String, String) {
        let chain = self
            .chain
            .iter()
            .map(|c| pem_block("CERTIFICATE", c))
            .collect();
        (chain, pem_block("PRIVATE KEY", &self.key_pkcs8))
    }

    /// The rustls form, signing with the crate's crypto provider.
    pub fn certified_key(&self) -> Result<Arc<CertifiedKey>, CertError> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.as_ref().clone()));
        let signer = crate::tls::provider()
            .key_provider
            .load_private_key(key)
            .map_err(CertError::Key)?;
        Ok(Arc::new(CertifiedKey::new(self.chain.clone(), signer)))
    }
}

/// A certificate as one PEM block (what `root-cert.pem` and istiod's `cert_chain` hold).
pub fn pem_certificate(der: &CertificateDer<'_>) -> String {
    pem_block("CERTIFICATE", der)
}

/// The SPIFFE identity in a certificate's URI SAN. Non-SPIFFE URIs are ignored; more than
/// one SPIFFE URI is refused rather than guessed between.
pub fn identity_of(der: &CertificateDer<'_>) -> Result<SpiffeId, CertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| CertError::Parse(e.to_string()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| CertError::Parse(e.to_string()))?
        .ok_or(CertError::NoIdentity)?;
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) if u.starts_with("spiffe://") => Some(*u),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [] => Err(CertError::NoIdentity),
        [one] => one.parse().map_err(CertError::BadIdentity),
        many => Err(CertError::ManyIdentities(many.len())),
    }
}

/// `(not_before, not_after)` of a certificate.
pub fn validity_of(der: &CertificateDer<'_>) -> Result<(SystemTime, SystemTime), CertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| CertError::Parse(e.to_string()))?;
    let v = cert.validity();
    Ok((
        to_system_time(v.not_before.timestamp()),
        to_system_time(v.not_after.timestamp()),
    ))
}

fn to_system_time(unix: i64) -> SystemTime {
    if unix >= 0 {
        UNIX_EPOCH + Duration::from_secs(unix as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs())
    }
}

/// One PEM block with 64-column base64 lines, ending in a newline (the form istiod sends).
pub(crate) fn pem_block(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip() {
        let dir = std::env::temp_dir().join(format!("hbone-pem-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ca = crate::FileCa::generate(&dir, "t").unwrap();
        let id: SpiffeId = "spiffe://cluster.local/ns/a/sa/b".parse().unwrap();
        let cert = ca.issue(&id, Duration::from_secs(60)).unwrap();
        let (chain, key) = cert.to_pem();
        assert!(chain.starts_with("-----BEGIN CERTIFICATE-----\n"));
        let back = WorkloadCertificate::from_pem(&chain, &key).unwrap();
        assert_eq!(back.chain(), cert.chain());
        assert_eq!(back.key_pkcs8(), cert.key_pkcs8());
        assert_eq!(back.identity(), &id);
        assert!(WorkloadCertificate::from_pem(&chain, "junk").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
