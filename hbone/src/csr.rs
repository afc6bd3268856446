//! Certificate signing requests as Istio's ztunnel sends them to the CA (protocol.md 5).
//!
//! A request carries a fresh ECDSA P-256 key's public half, is signed ECDSA-SHA256 with that
//! key, has an empty subject and exactly one subject alternative name: the URI SAN holding
//! the workload's SPIFFE ID. The private key never leaves the caller; it is returned as
//! PKCS#8 DER so it can go straight into [`crate::WorkloadCertificate::new`] once the CA
//! answers.
//!
//! The CA side, [`crate::FileCa::sign_csr`], lives with the CA; the round trip between the two
//! and the refusal of bad requests are tested here.

use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};

use crate::identity::SpiffeId;

/// Why a CSR could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("generating an ECDSA P-256 key failed")]
    Key(#[source] rcgen::Error),
    #[error("{identity} cannot be written as a URI SAN")]
    Uri {
        identity: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("signing the certificate request for {identity} failed")]
    Sign {
        identity: String,
        #[source]
        source: rcgen::Error,
    },
}

/// A fresh key and a PEM PKCS#10 request for `identity`: `(CSR PEM, PKCS#8 key DER)`.
pub fn generate(identity: &SpiffeId) -> Result<(String, Vec<u8>), CsrError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CsrError::Key)?;
    let shown = identity.to_string();
    let uri = shown.clone().try_into().map_err(|source| CsrError::Uri {
        identity: shown.clone(),
        source,
    })?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(uri)];
    let sign_err = |source| CsrError::Sign {
        identity: shown.clone(),
        source,
    };
    let pem = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(sign_err)?;
    Ok((pem, key.serialize_der()))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::{Path, PathBuf};
    use std::time::{Duration, SystemTime};

    use rcgen::{BasicConstraints, DnType, IsCa, Issuer, KeyUsagePurpose};
    use rustls::pki_types::CertificateDer;
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::FromDer;

    use super::*;
    use crate::ca::{
        BACKDATE, CA_CERT, CA_KEY, CERT_CHAIN, CaError, DEFAULT_LIFETIME, FileCa, MAX_LIFETIME,
        ROOT_CERT, SignedCsr, certs, pem_block,
    };
    use crate::cert::WorkloadCertificate;

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hbone-csr-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn request_has_only_the_spiffe_uri_san_and_a_valid_signature() {
        let id: SpiffeId = "spiffe://cluster.local/ns/shop/sa/cart".parse().unwrap();
        let (pem, key) = generate(&id).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        let der = rustls_pemfile::csr(&mut pem.as_bytes())
            .unwrap()
            .expect("one CSR");
        let (rest, csr) = X509CertificationRequest::from_der(der.as_ref()).unwrap();
        assert!(rest.is_empty());
        csr.verify_signature().unwrap();
        assert_eq!(
            csr.signature_algorithm.algorithm,
            x509_parser::oid_registry::OID_SIG_ECDSA_WITH_SHA256
        );
        assert_eq!(csr.certification_request_info.subject.iter().count(), 0);
        let exts: Vec<_> = csr.requested_extensions().unwrap().collect();
        assert_eq!(exts.len(), 1, "{exts:?}");
        match exts[0] {
            ParsedExtension::SubjectAlternativeName(san) => assert_eq!(
                san.general_names,
                vec![GeneralName::URI("spiffe://cluster.local/ns/shop/sa/cart")]
            ),
            other => panic!("unexpected extension {other:?}"),
        }
        // The key is PKCS#8 for P-256 and matches the request.
        let back = KeyPair::try_from(key.as_slice()).unwrap();
        assert!(back.is_compatible(&PKCS_ECDSA_P256_SHA256));
        assert_eq!(
            back.public_key_raw(),
            csr.certification_request_info
                .subject_pki
                .subject_public_key
                .as_ref()
        );
        // Fresh key per call.
        let (_, key2) = generate(&id).unwrap();
        assert_ne!(key, key2);
    }

    fn self_signed_ca(name: &str) -> (FileCa, PathBuf) {
        let dir = tempdir(name);
        (FileCa::generate(&dir, "test").unwrap(), dir)
    }

    /// A CA directory whose signing certificate is an intermediate under a separate root.
    fn intermediate_ca(name: &str) -> (FileCa, PathBuf, CertificateDer<'static>) {
        let dir = tempdir(name);
        fs::create_dir_all(&dir).unwrap();
        let ca_params = |org: &str| {
            let mut p = CertificateParams::default();
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.distinguished_name.push(DnType::OrganizationName, org);
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            p
        };
        let root_key = KeyPair::generate().unwrap();
        let root_params = ca_params("root");
        let root = root_params.self_signed(&root_key).unwrap();
        let root_issuer = Issuer::new(root_params, root_key);
        let int_key = KeyPair::generate().unwrap();
        let int = ca_params("intermediate")
            .signed_by(&int_key, &root_issuer)
            .unwrap();
        fs::write(dir.join(CA_CERT), int.pem()).unwrap();
        fs::write(dir.join(CA_KEY), int_key.serialize_pem()).unwrap();
        fs::write(dir.join(ROOT_CERT), root.pem()).unwrap();
        fs::write(dir.join(CERT_CHAIN), format!("{}{}", int.pem(), root.pem())).unwrap();
        (FileCa::load(&dir).unwrap(), dir, root.der().clone())
    }

    fn csr_with(sans: Vec<SanType>, alg: &'static rcgen::SignatureAlgorithm) -> String {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn uri(s: &str) -> SanType {
        SanType::URI(s.to_string().try_into().unwrap())
    }

    fn csr_der_of(pem: &str) -> Vec<u8> {
        rustls_pemfile::csr(&mut pem.as_bytes())
            .unwrap()
            .unwrap()
            .to_vec()
    }

    /// Full webpki path validation, as a peer would do it.
    fn verify_client_chain(chain: &[CertificateDer<'static>], root: &CertificateDer<'static>) {
        let mut store = rustls::RootCertStore::empty();
        store.add(root.clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(store),
            crate::tls::provider(),
        )
        .build()
        .unwrap();
        verifier
            .verify_client_cert(&chain[0], &chain[1..], rustls::pki_types::UnixTime::now())
            .unwrap();
    }

    #[test]
    fn generated_csr_is_signed_into_a_verifying_chain() {
        let id: SpiffeId = "spiffe://cluster.local/ns/shop/sa/cart".parse().unwrap();
        let (ss, ss_dir) = self_signed_ca("csr-ss");
        let (int, int_dir, int_root) = intermediate_ca("csr-int");
        let ss_root = ss.roots()[0].clone();
        for (ca, root, chain_len) in [(&ss, &ss_root, 1), (&int, &int_root, 2)] {
            let (csr, key) = crate::csr::generate(&id).unwrap();
            let before = SystemTime::now();
            let signed = ca.sign_csr(&csr, DEFAULT_LIFETIME).unwrap();
            assert_eq!(signed.identity(), &id);
            assert_eq!(signed.chain().len(), chain_len);
            assert_eq!(signed.root(), Some(root));
            verify_client_chain(signed.chain(), root);

            let cert = WorkloadCertificate::new(signed.chain().to_vec(), key).unwrap();
            assert_eq!(cert.identity(), &id);
            // The key in the CSR is the key we hold: rustls accepts the pair.
            cert.certified_key().unwrap().keys_match().unwrap();
            let back = before.duration_since(cert.not_before()).unwrap();
            assert!(
                back >= BACKDATE - Duration::from_secs(2)
                    && back <= BACKDATE + Duration::from_secs(2)
            );
            let life = cert.not_after().duration_since(cert.not_before()).unwrap();
            assert!(
                life >= DEFAULT_LIFETIME
                    && life <= DEFAULT_LIFETIME + BACKDATE + Duration::from_secs(2)
            );

            // Same extensions as `issue`.
            let (_, leaf) = x509_parser::parse_x509_certificate(&signed.chain()[0]).unwrap();
            let ku = leaf.key_usage().unwrap().unwrap().value;
            assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
            let eku = leaf.extended_key_usage().unwrap().unwrap().value;
            assert!(eku.server_auth && eku.client_auth);
            assert!(leaf.extensions().iter().any(|e| matches!(
                e.parsed_extension(),
                ParsedExtension::AuthorityKeyIdentifier(_)
            )));
            assert!(!leaf.is_ca());
            assert!(leaf.subject().iter().next().is_none());

            // istiod's response shape: one PEM per element, newline-terminated, root last.
            let pems = signed.chain_pem();
            assert_eq!(pems.len(), chain_len + 1);
            for (pem, der) in pems.iter().zip(signed.chain().iter().chain([root])) {
                assert!(
                    pem.starts_with("-----BEGIN CERTIFICATE-----\n")
                        && pem.ends_with("-----END CERTIFICATE-----\n")
                );
                assert_eq!(certs(Path::new("x"), pem).unwrap(), vec![der.clone()]);
            }
        }
        // Two signatures of one request get distinct serials.
        let (csr, _) = crate::csr::generate(&id).unwrap();
        let a = ss.sign_csr(&csr, DEFAULT_LIFETIME).unwrap();
        let b = ss.sign_csr(&csr, DEFAULT_LIFETIME).unwrap();
        let serial = |s: &SignedCsr| {
            x509_parser::parse_x509_certificate(&s.chain()[0])
                .unwrap()
                .1
                .raw_serial()
                .to_vec()
        };
        assert_ne!(serial(&a), serial(&b));
        fs::remove_dir_all(&ss_dir).unwrap();
        fs::remove_dir_all(&int_dir).unwrap();
    }

    #[test]
    fn other_key_types_keep_their_key() {
        let (ca, dir) = self_signed_ca("csr-algs");
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            let pem = csr_with(vec![uri("spiffe://td/ns/a/sa/b")], alg);
            let signed = ca.sign_csr(&pem, DEFAULT_LIFETIME).unwrap();
            let der = csr_der_of(&pem);
            let (_, csr) = X509CertificationRequest::from_der(&der).unwrap();
            let (_, leaf) = x509_parser::parse_x509_certificate(&signed.chain()[0]).unwrap();
            assert_eq!(
                leaf.public_key().raw,
                csr.certification_request_info.subject_pki.raw,
                "{alg:?}"
            );
            verify_client_chain(signed.chain(), &ca.roots()[0]);
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    type Check = fn(&CaError) -> bool;

    #[test]
    fn bad_requests_are_refused_with_typed_errors() {
        let (ca, dir) = self_signed_ca("csr-bad");
        let p256 = &rcgen::PKCS_ECDSA_P256_SHA256;
        let good = csr_with(vec![uri("spiffe://td/ns/shop/sa/cart")], p256);
        let good_der = csr_der_of(&good);

        // The identity changed after signing: structure intact, signature broken.
        let mut forged = good_der.clone();
        let at = forged.windows(4).position(|w| w == b"shop").unwrap();
        forged[at + 3] = b'q';
        // The signature's last byte flipped.
        let mut flipped = good_der.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x01;
        let mut trailing = good_der.clone();
        trailing.push(0);
        let cert_pem = ca
            .issue(&"spiffe://td/ns/a/sa/b".parse().unwrap(), DEFAULT_LIFETIME)
            .unwrap()
            .to_pem()
            .0;

        let parse: Check = |e| matches!(e, CaError::CsrParse { .. });
        let signature: Check = |e| matches!(e, CaError::CsrSignature(_));
        let identity: Check = |e| matches!(e, CaError::CsrIdentity { .. });
        let cases: Vec<(&str, String, Check)> = vec![
            ("empty", String::new(), parse),
            ("garbage", "not a pem at all".into(), parse),
            ("certificate instead", cert_pem, parse),
            (
                "bad base64",
                "-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n"
                    .into(),
                parse,
            ),
            ("not DER", pem_block("CERTIFICATE REQUEST", b"hello"), parse),
            (
                "truncated",
                pem_block("CERTIFICATE REQUEST", &good_der[..good_der.len() / 2]),
                parse,
            ),
            (
                "trailing bytes",
                pem_block("CERTIFICATE REQUEST", &trailing),
                parse,
            ),
            ("two requests", format!("{good}{good}"), parse),
            (
                "forged identity",
                pem_block("CERTIFICATE REQUEST", &forged),
                signature,
            ),
            (
                "flipped signature",
                pem_block("CERTIFICATE REQUEST", &flipped),
                signature,
            ),
            ("no SAN", csr_with(vec![], p256), identity),
            (
                "DNS SAN only",
                csr_with(
                    vec![SanType::DnsName("cart.shop".try_into().unwrap())],
                    p256,
                ),
                identity,
            ),
            (
                "URI and DNS SAN",
                csr_with(
                    vec![
                        uri("spiffe://td/ns/a/sa/b"),
                        SanType::DnsName("cart.shop".try_into().unwrap()),
                    ],
                    p256,
                ),
                identity,
            ),
            (
                "two URI SANs",
                csr_with(
                    vec![uri("spiffe://td/ns/a/sa/b"), uri("spiffe://td/ns/a/sa/c")],
                    p256,
                ),
                identity,
            ),
            (
                "IP SAN",
                csr_with(vec![SanType::IpAddress([10, 0, 0, 1].into())], p256),
                identity,
            ),
            (
                "non-SPIFFE URI",
                csr_with(vec![uri("https://td/ns/a/sa/b")], p256),
                identity,
            ),
            (
                "SPIFFE URI of the wrong shape",
                csr_with(vec![uri("spiffe://td/workload/x")], p256),
                identity,
            ),
        ];
        for (name, pem, check) in cases {
            let err = ca.sign_csr(&pem, DEFAULT_LIFETIME).unwrap_err();
            assert!(check(&err), "{name}: {err:?}");
            assert!(!err.to_string().is_empty());
        }
        for lifetime in [
            Duration::ZERO,
            MAX_LIFETIME + Duration::from_secs(1),
            Duration::MAX,
        ] {
            let err = ca.sign_csr(&good, lifetime).unwrap_err();
            assert!(
                matches!(err, CaError::Lifetime { .. }),
                "{lifetime:?}: {err:?}"
            );
        }
        assert!(ca.sign_csr(&good, MAX_LIFETIME).is_ok());
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A poor man's fuzz run: every truncation and many single-byte mutations of a valid
    /// request produce a result, never a panic, and no change to the signed part of the
    /// request is ever accepted.
    #[test]
    fn mutated_requests_never_panic() {
        let (ca, dir) = self_signed_ca("csr-mut");
        let id: SpiffeId = "spiffe://cluster.local/ns/a/sa/b".parse().unwrap();
        let (pem, _) = crate::csr::generate(&id).unwrap();
        let der = csr_der_of(&pem);
        let signed = {
            let (_, csr) = X509CertificationRequest::from_der(&der).unwrap();
            let raw = csr.certification_request_info.raw;
            let start = raw.as_ptr() as usize - der.as_ptr() as usize;
            start..start + raw.len()
        };
        for len in 0..der.len() {
            let _ = ca.sign_csr(
                &pem_block("CERTIFICATE REQUEST", &der[..len]),
                DEFAULT_LIFETIME,
            );
        }
        for i in 0..der.len() {
            for v in [0x00, 0x01, 0x7f, 0x80, 0xff, der[i] ^ 0x20] {
                if v == der[i] {
                    continue;
                }
                let mut m = der.clone();
                m[i] = v;
                let result = ca.sign_csr(&pem_block("CERTIFICATE REQUEST", &m), DEFAULT_LIFETIME);
                // The parser is lenient about the unsigned framing (outer tags, the signature
                // algorithm's encoding); those bytes do not change what the key holder signed.
                assert!(
                    result.is_err() || !signed.contains(&i),
                    "byte {i} of the signed request changed to {v:#x} and was accepted"
                );
            }
        }
        // Mutating the PEM text itself.
        for i in 0..pem.len() {
            let mut m = pem.clone().into_bytes();
            m[i] = b'#';
            let _ = ca.sign_csr(&String::from_utf8_lossy(&m), DEFAULT_LIFETIME);
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
