//! A certificate authority backed by a directory in the layout of Istio's `cacerts` secret:
//! `ca-cert.pem` (the signing certificate), `ca-key.pem` (its key), `root-cert.pem` (trust
//! roots) and `cert-chain.pem` (chain from the signing certificate up to the root).
//!
//! Workload certificates get a fresh ECDSA P-256 key each, a URI SAN with the SPIFFE ID and
//! both server and client auth, so one certificate serves both ends of an HBONE connection.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::CertificateDer;

use crate::cert::{CertError, WorkloadCertificate};
use crate::identity::SpiffeId;

pub const CA_CERT: &str = "ca-cert.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const ROOT_CERT: &str = "root-cert.pem";
pub const CERT_CHAIN: &str = "cert-chain.pem";

/// Istio's default workload certificate lifetime.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Clock skew tolerance: certificates start a little in the past.
const BACKDATE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("{path}: bad CA key")]
    Key {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    #[error("{0} already holds a CA; refusing to overwrite it")]
    Exists(PathBuf),
    #[error("signing a certificate for {identity} failed")]
    Sign {
        identity: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("issued certificate is unusable")]
    Issued(#[source] CertError),
}

/// A CA that signs workload certificates with a key held on local disk.
pub struct FileCa {
    issuer: Issuer<'static, KeyPair>,
    /// Certificates sent after the leaf: the signing certificate and any intermediates.
    chain: Vec<CertificateDer<'static>>,
    roots: Vec<CertificateDer<'static>>,
}

impl std::fmt::Debug for FileCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileCa")
            .field("chain_len", &self.chain.len())
            .field("roots", &self.roots.len())
            .finish()
    }
}

impl FileCa {
    /// Loads a CA directory. `cert-chain.pem` is optional (a self-signed CA needs none).
    pub fn load(dir: &Path) -> Result<Self, CaError> {
        let ca_cert_path = dir.join(CA_CERT);
        let ca_cert_pem = read(&ca_cert_path)?;
        let key_path = dir.join(CA_KEY);
        let key = KeyPair::from_pem(&read(&key_path)?).map_err(|source| CaError::Key {
            path: key_path.clone(),
            source,
        })?;
        let issuer =
            Issuer::from_ca_cert_pem(&ca_cert_pem, key).map_err(|source| CaError::Key {
                path: ca_cert_path.clone(),
                source,
            })?;
        let ca_cert = one_cert(&ca_cert_path, &ca_cert_pem)?;
        let roots_path = dir.join(ROOT_CERT);
        let roots = certs(&roots_path, &read(&roots_path)?)?;
        let chain_path = dir.join(CERT_CHAIN);
        let mut chain = if chain_path.exists() {
            certs(&chain_path, &read(&chain_path)?)?
        } else {
            vec![ca_cert.clone()]
        };
        if chain.first() != Some(&ca_cert) {
            chain.insert(0, ca_cert);
        }
        // Roots are configured at every peer; sending them again only costs bytes.
        chain.retain(|c| !roots.contains(c));
        Ok(FileCa {
            issuer,
            chain,
            roots,
        })
    }

    /// Creates a new self-signed root CA in `dir` (which may not exist yet) and loads it.
    pub fn generate(dir: &Path, organisation: &str) -> Result<Self, CaError> {
        if dir.join(CA_KEY).exists() {
            return Err(CaError::Exists(dir.to_path_buf()));
        }
        fs::create_dir_all(dir).map_err(|source| CaError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let key = KeyPair::generate().map_err(|source| CaError::Key {
            path: dir.join(CA_KEY),
            source,
        })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, organisation);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + Duration::from_secs(10 * 365 * 24 * 3600)).into();
        let cert = params.self_signed(&key).map_err(|source| CaError::Sign {
            identity: organisation.to_string(),
            source,
        })?;
        let pem = cert.pem();
        write(&dir.join(CA_CERT), &pem, 0o644)?;
        write(&dir.join(ROOT_CERT), &pem, 0o644)?;
        write(&dir.join(CERT_CHAIN), &pem, 0o644)?;
        write(&dir.join(CA_KEY), &key.serialize_pem(), 0o600)?;
        Self::load(dir)
    }

    /// The trust roots peers must chain to.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// Issues a certificate for `identity` valid from now for `lifetime`.
    pub fn issue(
        &self,
        identity: &SpiffeId,
        lifetime: Duration,
    ) -> Result<WorkloadCertificate, CaError> {
        let now = SystemTime::now();
        self.issue_between(identity, now - BACKDATE.min(lifetime), now + lifetime)
    }

    /// Issues a certificate with an explicit validity window (tests use this for expired ones).
    pub fn issue_between(
        &self,
        identity: &SpiffeId,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<WorkloadCertificate, CaError> {
        let sign_err = |source| CaError::Sign {
            identity: identity.to_string(),
            source,
        };
        let key = KeyPair::generate().map_err(sign_err)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let uri = identity.to_string().try_into().map_err(sign_err)?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let cert = params.signed_by(&key, &self.issuer).map_err(sign_err)?;
        let mut chain = vec![cert.der().clone()];
        chain.extend(self.chain.iter().cloned());
        WorkloadCertificate::new(chain, key.serialize_der()).map_err(CaError::Issued)
    }
}

fn read(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(|source| CaError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, contents: &str, mode: u32) -> Result<(), CaError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)
}

/// All certificates in a PEM file; at least one.
pub fn certs(path: &Path, pem: &str) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_bytes()).collect();
    let certs = certs.map_err(|e| CaError::Pem {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(CaError::Pem {
            path: path.to_path_buf(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

fn one_cert(path: &Path, pem: &str) -> Result<CertificateDer<'static>, CaError> {
    let mut all = certs(path, pem)?;
    if all.len() != 1 {
        return Err(CaError::Pem {
            path: path.to_path_buf(),
            reason: format!("expected one certificate, found {}", all.len()),
        });
    }
    Ok(all.remove(0))
}

/// Reads a trust bundle (one or more PEM certificates) from a file.
pub fn load_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaError> {
    certs(path, &read(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::identity_of;

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hbone-ca-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn generate_load_issue() {
        let dir = tempdir("gen");
        let ca = FileCa::generate(&dir, "test").unwrap();
        for f in [CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN] {
            assert!(dir.join(f).exists(), "{f} missing");
        }
        let again = FileCa::load(&dir).unwrap();
        assert_eq!(again.roots(), ca.roots());
        // A second generate must not clobber the existing key.
        assert!(matches!(
            FileCa::generate(&dir, "x"),
            Err(CaError::Exists(_))
        ));

        let id: SpiffeId = "spiffe://cluster.local/ns/a/sa/b".parse().unwrap();
        let cert = again.issue(&id, DEFAULT_LIFETIME).unwrap();
        assert_eq!(cert.identity(), &id);
        assert_eq!(identity_of(&cert.chain()[0]).unwrap(), id);
        let life = cert.not_after().duration_since(cert.not_before()).unwrap();
        assert!(
            life >= DEFAULT_LIFETIME
                && life <= DEFAULT_LIFETIME + BACKDATE + Duration::from_secs(2)
        );
        let half = cert.refresh_at().duration_since(cert.not_before()).unwrap();
        assert_eq!(half, life / 2);
        // Self-signed root: nothing but the leaf is sent.
        assert_eq!(cert.chain().len(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_or_bad_files_name_the_file() {
        let dir = tempdir("bad");
        fs::create_dir_all(&dir).unwrap();
        let err = FileCa::load(&dir).unwrap_err().to_string();
        assert!(err.contains(CA_CERT), "{err}");
        fs::write(dir.join(CA_CERT), "not pem").unwrap();
        fs::write(dir.join(CA_KEY), "not pem").unwrap();
        let err = FileCa::load(&dir).unwrap_err().to_string();
        assert!(err.contains(CA_KEY), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
