//! The CA service over real TLS and gRPC: what it issues and every refusal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hbone::SpiffeId;
use proto::citadel::IstioCertificateRequest;
use proto::citadel::istio_certificate_service_client::IstioCertificateServiceClient;
use support::{Meshd, NAMESPACE_YAML, pod};
use tonic::Code;

const CART: &str = "spiffe://cluster.local/ns/shop/sa/cart";
const DB: &str = "spiffe://cluster.local/ns/shop/sa/db";

async fn meshd() -> Meshd {
    let pods = [
        pod("cart-0", "cart", "node-a", "10.1.0.1"),
        pod("db-0", "db", "node-b", "10.1.0.2"),
    ]
    .join("---\n");
    Meshd::start(
        "ca",
        &[("ns.yaml", NAMESPACE_YAML.to_string()), ("pods.yaml", pods)],
    )
    .await
}

struct Ask<'a> {
    token: Option<String>,
    csr_for: &'a str,
    impersonate: Option<&'a str>,
    ttl: i64,
    tamper: bool,
}

impl Ask<'_> {
    async fn send(self, meshd: &Meshd) -> Result<Vec<String>, tonic::Status> {
        let id: SpiffeId = self.csr_for.parse().unwrap();
        let (mut csr, _key) = hbone::csr::generate(&id).unwrap();
        if self.tamper {
            csr = tamper(&csr);
        }
        let metadata = self.impersonate.map(|i| prost_types::Struct {
            fields: [(
                "ImpersonatedIdentity".to_string(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue(i.to_string())),
                },
            )]
            .into(),
        });
        let target = meshd.target(self.token);
        let channel = xds_client::connect(&target).await.unwrap();
        let req = target
            .request(IstioCertificateRequest {
                csr,
                validity_duration: self.ttl,
                metadata,
            })
            .unwrap();
        IstioCertificateServiceClient::new(channel)
            .create_certificate(req)
            .await
            .map(|r| r.into_inner().cert_chain)
    }
}

/// The same CSR with one bit of its signature flipped.
fn tamper(pem: &str) -> String {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let mut der = STANDARD.decode(b64).unwrap();
    let last = der.len() - 1;
    der[last] ^= 1;
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        lines.join("\n")
    )
}

#[tokio::test]
async fn issues_only_what_the_caller_may_hold() {
    let meshd = meshd().await;
    let node_a = meshd.node_token("node-a");
    let ask = |token: Option<String>, csr_for, impersonate| Ask {
        token,
        csr_for,
        impersonate,
        ttl: 3600,
        tamper: false,
    };

    // Issued: a node proxy for a pod on its node, with and without impersonation; a pod for
    // its own service account.
    let pod_token = meshd.running().tokens.mint_pod("shop", "cart", "cart-0");
    for (what, a) in [
        (
            "node proxy impersonating",
            ask(Some(node_a.clone()), CART, Some(CART)),
        ),
        (
            "dedicated-mode ztunnel",
            ask(Some(node_a.clone()), CART, None),
        ),
        (
            "pod token, own account",
            ask(Some(pod_token.clone()), CART, None),
        ),
    ] {
        let chain = a
            .send(&meshd)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(chain.len() >= 2, "{what}: leaf and root");
        assert!(
            chain
                .iter()
                .all(|c| c.ends_with("-----END CERTIFICATE-----\n"))
        );
        assert_eq!(
            chain.last().unwrap(),
            &meshd.running().root_pem,
            "{what}: root last"
        );
        let leaf = rustls_pemfile::certs(&mut chain[0].as_bytes())
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(
            hbone::identity_of(&leaf).unwrap().to_string(),
            CART,
            "{what}"
        );
        let (from, to) = hbone::validity_of(&leaf).unwrap();
        let life = to.duration_since(from).unwrap();
        assert!(
            life >= Duration::from_secs(3600) && life <= Duration::from_secs(3700),
            "{what}: {life:?}"
        );
    }

    // Refused, each with a clear status.
    let rows: Vec<(&str, Ask, Code, &str)> = vec![
        (
            "no token",
            ask(None, CART, Some(CART)),
            Code::Unauthenticated,
            "no bearer token",
        ),
        (
            "forged token",
            ask(Some("a.b.c".into()), CART, Some(CART)),
            Code::Unauthenticated,
            "token",
        ),
        (
            "pod not on the caller's node",
            ask(Some(node_a.clone()), DB, Some(DB)),
            Code::PermissionDenied,
            "node-a",
        ),
        (
            "dedicated mode, pod not on the node",
            ask(Some(node_a.clone()), DB, None),
            Code::PermissionDenied,
            "node-a",
        ),
        (
            "CSR SAN differs from the requested identity",
            ask(Some(node_a.clone()), DB, Some(CART)),
            Code::InvalidArgument,
            "CSR asks for",
        ),
        (
            "pod token for another account",
            ask(Some(pod_token.clone()), DB, None),
            Code::PermissionDenied,
            "own service account",
        ),
        (
            "pod token impersonating",
            ask(Some(pod_token.clone()), CART, Some(CART)),
            Code::PermissionDenied,
            "may not impersonate",
        ),
        (
            "other trust domain",
            ask(
                Some(node_a.clone()),
                "spiffe://evil.local/ns/shop/sa/cart",
                None,
            ),
            Code::PermissionDenied,
            "trust domain",
        ),
        (
            "CSR signature does not verify",
            Ask {
                tamper: true,
                ..ask(Some(node_a.clone()), CART, None)
            },
            Code::InvalidArgument,
            "bad CSR",
        ),
        (
            "lifetime above the maximum",
            Ask {
                ttl: 91 * 24 * 3600,
                ..ask(Some(node_a.clone()), CART, None)
            },
            Code::InvalidArgument,
            "lifetime",
        ),
        (
            "negative lifetime",
            Ask {
                ttl: -1,
                ..ask(Some(node_a.clone()), CART, None)
            },
            Code::InvalidArgument,
            "lifetime",
        ),
    ];
    let refusals = rows.len();
    for (what, a, code, text) in rows {
        let err = a.send(&meshd).await.expect_err(what);
        assert_eq!(err.code(), code, "{what}: {err:?}");
        assert!(
            err.message().contains(text),
            "{what}: {:?} lacks {text:?}",
            err.message()
        );
        println!("refused ({what}): {:?}: {}", err.code(), err.message());
    }
    assert_eq!(
        meshd
            .metric("citadel_server_success_cert_issuance_count", "")
            .await,
        3.0
    );
    assert_eq!(
        meshd
            .metric("citadel_server_authentication_failure_count", "")
            .await
            + meshd.metric("meshd_ca_refusals", "").await,
        refusals as f64
    );
}
