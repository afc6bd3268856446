//! A certificate authority backed by a directory in the layout of Istio's `cacerts` secret:
//! `ca-cert.pem` (the signing certificate), `ca-key.pem` (its key), `root-cert.pem` (trust
//! roots) and `cert-chain.pem` (chain from the signing certificate up to the root).
//!
//! Workload certificates get a fresh ECDSA P-256 key each, a URI SAN with the SPIFFE ID and
//! both server and client auth, so one certificate serves both ends of an HBONE connection.
//!
//! [`FileCa::sign_csr`] is the server half of istiod's `CreateCertificate` (protocol.md 5): it
//! checks a request in this order, refusing at the first failure with a typed error:
//! 1. the lifetime is between 1 s and [`MAX_LIFETIME`];
//! 2. the text holds exactly one `CERTIFICATE REQUEST` PEM block and nothing else;
//! 3. the block is a DER PKCS#10 request with no trailing bytes;
//! 4. its self-signature verifies with the key it carries (proof of possession; SHA-1 refused);
//! 5. its only SAN is one URI SAN holding a workload SPIFFE ID;
//! 6. its key is one rcgen can write into a certificate (ECDSA P-256/P-384, Ed25519, RSA).
//!
//! Everything else in the request (subject, requested key usages, basic constraints) is
//! ignored: the leaf gets exactly the extensions [`FileCa::issue`] gives.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use rustls::pki_types::CertificateDer;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::error::X509Error;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_PKCS1_SHA1WITHRSA, OID_SHA1_WITH_RSA, OID_X509_EXT_SUBJECT_ALT_NAME,
};
use x509_parser::prelude::FromDer;

use crate::cert::{CertError, WorkloadCertificate};
use crate::identity::{IdentityError, SpiffeId};

pub const CA_CERT: &str = "ca-cert.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const ROOT_CERT: &str = "root-cert.pem";
pub const CERT_CHAIN: &str = "cert-chain.pem";

/// Istio's default workload certificate lifetime.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The longest lifetime [`FileCa::sign_csr`] grants; istiod's default maximum workload TTL.
pub const MAX_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

/// Clock skew tolerance: certificates start a little in the past.
pub(crate) const BACKDATE: Duration = Duration::from_secs(60);

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
    #[error("certificate signing request is unreadable: {reason}")]
    CsrParse { reason: String },
    #[error(
        "certificate signing request signature is unsupported or does not verify with the request's own key (corrupted in transit, or not made by the key holder)"
    )]
    CsrSignature(#[source] X509Error),
    #[error("certificate signing request does not name one workload identity: {reason}")]
    CsrIdentity {
        reason: String,
        #[source]
        source: Option<IdentityError>,
    },
    #[error("certificate signing request carries a key type this CA cannot certify")]
    CsrKey(#[source] rcgen::Error),
    #[error(
        "requested certificate lifetime {requested:?} is outside 1s..={max:?} (callers map an unset TTL to the default)"
    )]
    Lifetime { requested: Duration, max: Duration },
    #[error("no secure randomness for a certificate serial number")]
    Random,
}

/// A certificate issued for a CSR: the identity the request named and the chain to send back.
#[derive(Clone, Debug)]
pub struct SignedCsr {
    identity: SpiffeId,
    /// The leaf, then this CA's signing certificate and intermediates; never the root.
    chain: Vec<CertificateDer<'static>>,
    /// The trust root the chain ends at, sent last in istiod's response shape.
    root: Option<CertificateDer<'static>>,
}

impl SignedCsr {
    /// The identity read from the request (and written into the leaf).
    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }

    /// Leaf first, then intermediates, without the root: what a TLS peer presents and what
    /// [`WorkloadCertificate::new`] takes.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The root the chain ends at.
    pub fn root(&self) -> Option<&CertificateDer<'static>> {
        self.root.as_ref()
    }

    /// istiod's `IstioCertificateResponse.cert_chain`: one PEM certificate per element, each
    /// ending in a newline, leaf first and root last.
    pub fn chain_pem(&self) -> Vec<String> {
        self.chain
            .iter()
            .chain(self.root.as_ref())
            .map(|c| pem_block("CERTIFICATE", c))
            .collect()
    }
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
        let params = leaf_params(identity, not_before, not_after)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(sign_err)?;
        let mut chain = vec![cert.der().clone()];
        chain.extend(self.chain.iter().cloned());
        WorkloadCertificate::new(chain, key.serialize_der()).map_err(CaError::Issued)
    }

    /// Issues a server certificate for DNS names (and IP addresses) — the control plane's
    /// own serving certificate, as istiod's `istiod.istio-system.svc`. Returns the chain
    /// (leaf first, no root) and the PKCS#8 key.
    pub fn issue_serving(
        &self,
        names: &[String],
        lifetime: Duration,
    ) -> Result<(Vec<CertificateDer<'static>>, Vec<u8>), CaError> {
        let sign_err = |source| CaError::Sign {
            identity: names.join(","),
            source,
        };
        let key = KeyPair::generate().map_err(sign_err)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for name in names {
            let san = match name.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(name.clone().try_into().map_err(sign_err)?),
            };
            params.subject_alt_names.push(san);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE.min(lifetime)).into();
        params.not_after = (now + lifetime).into();
        let cert = params.signed_by(&key, &self.issuer).map_err(sign_err)?;
        let mut chain = vec![cert.der().clone()];
        chain.extend(self.chain.iter().cloned());
        Ok((chain, key.serialize_der()))
    }

    /// Signs a PEM PKCS#10 request for the SPIFFE identity in its URI SAN, valid from now for
    /// `lifetime` (at most [`MAX_LIFETIME`]). Never panics, whatever the input.
    pub fn sign_csr(&self, csr_pem: &str, lifetime: Duration) -> Result<SignedCsr, CaError> {
        if lifetime.is_zero() || lifetime > MAX_LIFETIME {
            return Err(CaError::Lifetime {
                requested: lifetime,
                max: MAX_LIFETIME,
            });
        }
        let der = csr_der(csr_pem)?;
        let (rest, csr) =
            X509CertificationRequest::from_der(&der).map_err(|e| CaError::CsrParse {
                reason: format!("not a PKCS#10 request: {e}"),
            })?;
        if !rest.is_empty() {
            return Err(CaError::CsrParse {
                reason: format!("{} bytes after the request", rest.len()),
            });
        }
        let alg = &csr.signature_algorithm.algorithm;
        if *alg == OID_PKCS1_SHA1WITHRSA || *alg == OID_SHA1_WITH_RSA {
            return Err(CaError::CsrSignature(
                X509Error::SignatureUnsupportedAlgorithm,
            ));
        }
        csr.verify_signature().map_err(CaError::CsrSignature)?;
        let identity = csr_identity(&csr)?;
        let public_key =
            SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
                .map_err(CaError::CsrKey)?;

        let now = SystemTime::now();
        let mut params = leaf_params(&identity, now - BACKDATE.min(lifetime), now + lifetime)?;
        // rcgen's default serial hashes the public key, so re-signing one request would repeat
        // a serial; a caller may legitimately do that, so draw it at random.
        params.serial_number = Some(random_serial()?);
        let leaf = params
            .signed_by(&public_key, &self.issuer)
            .map_err(|source| CaError::Sign {
                identity: identity.to_string(),
                source,
            })?;

        let mut chain = vec![leaf.der().clone()];
        chain.extend(self.chain.iter().cloned());
        let root = self.root_of(chain.last()).cloned();
        Ok(SignedCsr {
            identity,
            chain,
            root,
        })
    }

    /// The root that issued `top` (matched by name), else the first configured root.
    fn root_of(&self, top: Option<&CertificateDer<'static>>) -> Option<&CertificateDer<'static>> {
        let issuer = top.and_then(|c| {
            x509_parser::parse_x509_certificate(c)
                .ok()
                .map(|(_, c)| c.issuer().as_raw().to_vec())
        });
        issuer
            .and_then(|issuer| {
                self.roots.iter().find(|r| {
                    x509_parser::parse_x509_certificate(r)
                        .is_ok_and(|(_, r)| r.subject().as_raw() == issuer.as_slice())
                })
            })
            .or_else(|| self.roots.first())
    }
}

/// A workload leaf's parameters, the same for [`FileCa::issue`] and [`FileCa::sign_csr`]:
/// empty subject, the SPIFFE ID as the only (URI) SAN, digital signature + key encipherment,
/// server + client auth, an authority key identifier.
fn leaf_params(
    identity: &SpiffeId,
    not_before: SystemTime,
    not_after: SystemTime,
) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let uri = identity
        .to_string()
        .try_into()
        .map_err(|source| CaError::Sign {
            identity: identity.to_string(),
            source,
        })?;
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
    Ok(params)
}

/// The DER of the only `CERTIFICATE REQUEST` block in `pem`.
fn csr_der(pem: &str) -> Result<Vec<u8>, CaError> {
    let mut found = None;
    for item in rustls_pemfile::read_all(&mut pem.as_bytes()) {
        let item = item.map_err(|e| CaError::CsrParse {
            reason: format!("bad PEM: {e}"),
        })?;
        match (item, &found) {
            (rustls_pemfile::Item::Csr(der), None) => found = Some(der.to_vec()),
            (rustls_pemfile::Item::Csr(_), Some(_)) => {
                return Err(CaError::CsrParse {
                    reason: "more than one CERTIFICATE REQUEST block".into(),
                });
            }
            _ => {
                return Err(CaError::CsrParse {
                    reason: "PEM block other than CERTIFICATE REQUEST".into(),
                });
            }
        }
    }
    found.ok_or_else(|| CaError::CsrParse {
        reason: "no CERTIFICATE REQUEST PEM block".into(),
    })
}

/// The SPIFFE ID in the request's only SAN.
fn csr_identity(csr: &X509CertificationRequest<'_>) -> Result<SpiffeId, CaError> {
    let refuse = |reason: String| CaError::CsrIdentity {
        reason,
        source: None,
    };
    let mut names = Vec::new();
    for attr in csr.certification_request_info.iter_attributes() {
        let ParsedCriAttribute::ExtensionRequest(req) = attr.parsed_attribute() else {
            continue;
        };
        for ext in req
            .extensions
            .iter()
            .filter(|e| e.oid == OID_X509_EXT_SUBJECT_ALT_NAME)
        {
            match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    names.extend(san.general_names.iter())
                }
                _ => {
                    return Err(refuse(
                        "unreadable subject alternative name extension".into(),
                    ));
                }
            }
        }
    }
    match names.as_slice() {
        [] => Err(refuse("no subject alternative name".into())),
        [GeneralName::URI(uri)] => uri.parse().map_err(|e| CaError::CsrIdentity {
            reason: format!("URI SAN {uri:?} is not a workload SPIFFE ID"),
            source: Some(e),
        }),
        [other] => Err(refuse(format!(
            "the SAN is {other}, not a URI SAN with a SPIFFE ID"
        ))),
        many => Err(refuse(format!(
            "{} SANs; exactly one URI SAN is allowed",
            many.len()
        ))),
    }
}

pub(crate) use crate::cert::pem_block;

/// A positive, non-zero 128-bit serial from the crate's crypto provider.
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    crate::tls::provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| CaError::Random)?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
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
