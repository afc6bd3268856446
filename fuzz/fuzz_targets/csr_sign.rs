//! The file CA signing a workload's CSR (`hbone::FileCa::sign_csr`), as meshd's
//! `CreateCertificate` does with the PEM a client sends.
//!
//! The first byte picks the lifetime and how the rest becomes a CSR:
//! - 0: the rest is the PEM text itself;
//! - 1: the rest is DER, wrapped in a `CERTIFICATE REQUEST` PEM block (past the PEM layer);
//! - 2: the rest lists subject alternative names (NUL-separated, the first byte of each its
//!   type), put in a CSR properly signed by a fixed key, so `sign_csr` gets past the
//!   signature check and reads the SANs, as it does for any client holding a key.
#![no_main]

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hbone::{DEFAULT_LIFETIME, FileCa, MAX_LIFETIME};
use libfuzzer_sys::fuzz_target;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};

fn ca() -> &'static FileCa {
    static CA: OnceLock<FileCa> = OnceLock::new();
    CA.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("mesh-fuzz-ca-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ca = FileCa::generate(&dir, "fuzz").expect("generate the fuzz CA");
        let _ = std::fs::remove_dir_all(&dir);
        ca
    })
}

fn client_key() -> &'static KeyPair {
    static KEY: OnceLock<KeyPair> = OnceLock::new();
    KEY.get_or_init(|| KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("client key"))
}

/// A signed CSR with the SANs `spec` describes; `None` for SANs rcgen cannot encode.
fn structured(spec: &[u8]) -> Option<String> {
    let mut sans = Vec::new();
    for entry in spec.split(|b| *b == 0).take(4) {
        let (&kind, value) = entry.split_first()?;
        let text = String::from_utf8_lossy(value).into_owned();
        sans.push(match kind % 4 {
            0 => SanType::URI(text.try_into().ok()?),
            1 => SanType::DnsName(text.try_into().ok()?),
            2 => SanType::Rfc822Name(text.try_into().ok()?),
            _ => SanType::IpAddress(match <[u8; 4]>::try_from(value) {
                Ok(v4) => IpAddr::from(v4),
                Err(_) => IpAddr::from(<[u8; 16]>::try_from(value).ok()?),
            }),
        });
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = sans;
    params.serialize_request(client_key()).ok()?.pem().ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let lifetime = match (flags >> 4) % 8 {
        0 => Duration::ZERO,
        1 => Duration::from_secs(1),
        2 => MAX_LIFETIME,
        3 => MAX_LIFETIME + Duration::from_secs(1),
        _ => DEFAULT_LIFETIME,
    };
    let pem = match flags % 4 {
        0 => match std::str::from_utf8(rest) {
            Ok(text) => text.to_string(),
            Err(_) => return,
        },
        1 => format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            STANDARD.encode(rest)
        ),
        _ => match structured(rest) {
            Some(pem) => pem,
            None => return,
        },
    };
    match ca().sign_csr(&pem, lifetime) {
        Ok(signed) => {
            assert!(!signed.chain().is_empty());
            let _ = signed.chain_pem();
            // What the CA signs names exactly the identity it reports.
            assert_eq!(
                hbone::identity_of(&signed.chain()[0]).ok().as_ref(),
                Some(signed.identity())
            );
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
