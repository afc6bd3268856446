//! `istio.v1.auth.IstioCertificateService/CreateCertificate`: signs a CSR only for an identity
//! the caller may hold (Istio's model, protocol.md 5).
//!
//! Rules, in order (`decide` is the pure part, tested by table):
//! 1. The caller must present a valid bearer token (`UNAUTHENTICATED` otherwise).
//! 2. The lifetime asked for must be 0 (the default) up to the maximum (`INVALID_ARGUMENT`).
//! 3. The CSR must parse, its signature verify, and carry exactly one SPIFFE URI SAN
//!    (`INVALID_ARGUMENT`).
//! 4. The identity asked for is `ImpersonatedIdentity` from the metadata, else the CSR's SAN;
//!    the two must agree (`INVALID_ARGUMENT`), and be in our trust domain.
//! 5. A node proxy (its account listed in `CA_TRUSTED_NODE_ACCOUNTS`, token bound to a node)
//!    may hold its own identity and that of any pod scheduled on its node; any other caller
//!    only its own service account, and may not impersonate (`PERMISSION_DENIED`).

use std::sync::Arc;
use std::time::Duration;

use hbone::{FileCa, SpiffeId};
use proto::citadel::istio_certificate_service_server::IstioCertificateService;
use proto::citadel::{IstioCertificateRequest, IstioCertificateResponse};
use tonic::{Request, Response, Status};

use crate::auth::{Authenticator, Caller, authenticate};
use crate::grpc::PeerAddr;
use crate::metrics::Metrics;
use crate::snapshot::{Snapshot, SnapshotRx};

/// Metadata key a node proxy uses to ask for a pod's identity.
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// Who may get which certificates.
#[derive(Debug, Clone)]
pub struct CaPolicy {
    pub trust_domain: String,
    /// `namespace/service-account` of node proxies (istiod `CA_TRUSTED_NODE_ACCOUNTS`).
    pub trusted_node_accounts: Vec<String>,
    /// Lifetime when the request asks for none (istiod `DEFAULT_WORKLOAD_CERT_TTL`, 24 h).
    pub default_ttl: Duration,
    /// Longest lifetime granted (istiod `MAX_WORKLOAD_CERT_TTL`, 90 days).
    pub max_ttl: Duration,
}

impl Default for CaPolicy {
    fn default() -> Self {
        CaPolicy {
            trust_domain: hbone::DEFAULT_TRUST_DOMAIN.into(),
            trusted_node_accounts: vec!["istio-system/ztunnel".into()],
            default_ttl: Duration::from_secs(24 * 3600),
            max_ttl: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// Why a request is refused after authentication.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("requested lifetime {requested}s is not between 0 (default) and the maximum {max}s")]
    Lifetime { requested: i64, max: u64 },
    #[error("ImpersonatedIdentity {0:?} is not a SPIFFE ID")]
    BadImpersonation(String),
    #[error("the CSR asks for {csr}, but the requested identity is {requested}")]
    SanMismatch { csr: String, requested: String },
    #[error("{identity} is outside this mesh's trust domain {trust_domain:?}")]
    TrustDomain {
        identity: String,
        trust_domain: String,
    },
    #[error("node proxy {account} has a token that is not bound to a node")]
    NodeUnbound { account: String },
    #[error(
        "no pod with service account {namespace}/{service_account} is scheduled on node {node:?} (the caller's node)"
    )]
    NotOnNode {
        namespace: String,
        service_account: String,
        node: String,
    },
    #[error("caller {account} may not impersonate other identities")]
    Impersonation { account: String },
    #[error(
        "caller {account} may only get certificates for its own service account, not {identity}"
    )]
    NotOwnIdentity { account: String, identity: String },
}

impl Refusal {
    fn status(&self) -> Status {
        match self {
            Refusal::Lifetime { .. }
            | Refusal::BadImpersonation(_)
            | Refusal::SanMismatch { .. } => Status::invalid_argument(self.to_string()),
            _ => Status::permission_denied(self.to_string()),
        }
    }
}

/// The lifetime to grant for `validity_duration` seconds.
pub fn lifetime(policy: &CaPolicy, requested: i64) -> Result<Duration, Refusal> {
    let max = policy.max_ttl.as_secs();
    match u64::try_from(requested) {
        Ok(0) => Ok(policy.default_ttl.min(policy.max_ttl)),
        Ok(secs) if secs <= max => Ok(Duration::from_secs(secs)),
        _ => Err(Refusal::Lifetime { requested, max }),
    }
}

/// The identity requested: the impersonated one if given, which must match the CSR's.
pub fn requested_identity(
    csr_identity: &SpiffeId,
    impersonated: Option<&str>,
) -> Result<SpiffeId, Refusal> {
    let Some(raw) = impersonated else {
        return Ok(csr_identity.clone());
    };
    let requested: SpiffeId = raw
        .parse()
        .map_err(|_| Refusal::BadImpersonation(raw.to_string()))?;
    if &requested != csr_identity {
        return Err(Refusal::SanMismatch {
            csr: csr_identity.to_string(),
            requested: requested.to_string(),
        });
    }
    Ok(requested)
}

/// Whether `caller` may hold `identity` (rule 5).
pub fn decide(
    policy: &CaPolicy,
    caller: &Caller,
    identity: &SpiffeId,
    impersonating: bool,
    snapshot: &Snapshot,
) -> Result<(), Refusal> {
    if identity.trust_domain() != policy.trust_domain {
        return Err(Refusal::TrustDomain {
            identity: identity.to_string(),
            trust_domain: policy.trust_domain.clone(),
        });
    }
    let account = caller.account();
    let own = identity.namespace() == caller.namespace
        && identity.service_account() == caller.service_account;
    if policy.trusted_node_accounts.contains(&account) {
        let Some(node) = caller.node.as_deref().filter(|n| !n.is_empty()) else {
            return Err(Refusal::NodeUnbound { account });
        };
        if own || snapshot.node_holds(node, identity.namespace(), identity.service_account()) {
            return Ok(());
        }
        return Err(Refusal::NotOnNode {
            namespace: identity.namespace().to_string(),
            service_account: identity.service_account().to_string(),
            node: node.to_string(),
        });
    }
    if impersonating {
        return Err(Refusal::Impersonation { account });
    }
    if !own {
        return Err(Refusal::NotOwnIdentity {
            account,
            identity: identity.to_string(),
        });
    }
    Ok(())
}

#[derive(Clone)]
pub struct CaService {
    pub ca: Arc<FileCa>,
    pub auth: Arc<dyn Authenticator>,
    pub snapshots: SnapshotRx,
    pub policy: CaPolicy,
    pub metrics: Metrics,
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        self.metrics.csr_count.inc();
        let peer = request
            .extensions()
            .get::<PeerAddr>()
            .map_or_else(|| "unknown".to_string(), |p| p.0.to_string());
        let caller = match authenticate(self.auth.as_ref(), request.metadata()).await {
            Ok(c) => c,
            Err(e) => {
                self.metrics.auth_failures.inc();
                tracing::warn!(%peer, error = %e, "certificate request refused: not authenticated");
                return Err(e.status());
            }
        };
        let req = request.into_inner();
        // Which pods run where is known once the first config is published.
        let mut snapshots = self.snapshots.clone();
        let loaded = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            snapshots.wait_for(|s| s.version > 0),
        )
        .await;
        if !matches!(loaded, Ok(Ok(_))) {
            return Err(Status::unavailable(
                "meshd has not loaded its config yet; retry shortly",
            ));
        }
        match self.sign(&caller, &req) {
            Ok((identity, chain, ttl)) => {
                self.metrics.cert_issued.inc();
                tracing::info!(%peer, caller = %caller.account(), node = ?caller.node, %identity, ttl_secs = ttl.as_secs(), "certificate issued");
                Ok(Response::new(IstioCertificateResponse {
                    cert_chain: chain,
                }))
            }
            Err(status) => {
                self.metrics.csr_refused.inc();
                tracing::warn!(%peer, caller = %caller.account(), node = ?caller.node, reason = %status.message(), "certificate request refused");
                Err(status)
            }
        }
    }
}

impl CaService {
    fn sign(
        &self,
        caller: &Caller,
        req: &IstioCertificateRequest,
    ) -> Result<(SpiffeId, Vec<String>, Duration), Status> {
        let ttl = lifetime(&self.policy, req.validity_duration).map_err(|r| r.status())?;
        let impersonated = req
            .metadata
            .as_ref()
            .and_then(|m| m.fields.get(IMPERSONATED_IDENTITY))
            .map(|v| match &v.kind {
                Some(prost_types::value::Kind::StringValue(s)) => Ok(s.as_str()),
                _ => Err(Refusal::BadImpersonation(format!("{v:?}")).status()),
            })
            .transpose()?;
        // Signing verifies the CSR and reads its identity; the certificate is only returned
        // once the caller is found to be allowed that identity.
        let signed = self.ca.sign_csr(&req.csr, ttl).map_err(|e| {
            let chain: Vec<String> =
                std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
                    .map(ToString::to_string)
                    .collect();
            Status::invalid_argument(format!("bad CSR: {}", chain.join(": ")))
        })?;
        let identity =
            requested_identity(signed.identity(), impersonated).map_err(|r| r.status())?;
        let snapshot = self.snapshots.borrow().clone();
        decide(
            &self.policy,
            caller,
            &identity,
            impersonated.is_some(),
            &snapshot,
        )
        .map_err(|r| r.status())?;
        Ok((identity, signed.chain_pem(), ttl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(ns: &str, sa: &str, node: Option<&str>) -> Caller {
        Caller {
            namespace: ns.into(),
            service_account: sa.into(),
            pod: None,
            node: node.map(str::to_string),
        }
    }

    fn id(s: &str) -> SpiffeId {
        s.parse().unwrap()
    }

    #[test]
    fn who_may_hold_what() {
        let policy = CaPolicy::default();
        let mut snap = Snapshot::default();
        snap.identities.add("node-a", "shop", "cart");
        let ztunnel_a = caller("istio-system", "ztunnel", Some("node-a"));
        let ztunnel_b = caller("istio-system", "ztunnel", Some("node-b"));
        let unbound = caller("istio-system", "ztunnel", None);
        let cart = caller("shop", "cart", None);
        let cart_id = id("spiffe://cluster.local/ns/shop/sa/cart");
        type Row<'a> = (&'a str, &'a Caller, SpiffeId, bool, Result<(), &'a str>);
        let rows: Vec<Row> = vec![
            (
                "node proxy, pod on its node",
                &ztunnel_a,
                cart_id.clone(),
                true,
                Ok(()),
            ),
            (
                "node proxy, dedicated mode (no impersonation)",
                &ztunnel_a,
                cart_id.clone(),
                false,
                Ok(()),
            ),
            (
                "node proxy, its own identity",
                &ztunnel_b,
                id("spiffe://cluster.local/ns/istio-system/sa/ztunnel"),
                false,
                Ok(()),
            ),
            (
                "node proxy, pod on another node",
                &ztunnel_b,
                cart_id.clone(),
                true,
                Err("NotOnNode"),
            ),
            (
                "node proxy token without node",
                &unbound,
                cart_id.clone(),
                true,
                Err("NodeUnbound"),
            ),
            (
                "pod token, own identity",
                &cart,
                cart_id.clone(),
                false,
                Ok(()),
            ),
            (
                "pod token, other identity",
                &cart,
                id("spiffe://cluster.local/ns/shop/sa/db"),
                false,
                Err("NotOwnIdentity"),
            ),
            (
                "pod token impersonating",
                &cart,
                cart_id.clone(),
                true,
                Err("Impersonation"),
            ),
            (
                "other trust domain",
                &ztunnel_a,
                id("spiffe://evil.local/ns/shop/sa/cart"),
                true,
                Err("TrustDomain"),
            ),
        ];
        for (name, who, identity, imp, want) in rows {
            let got = decide(&policy, who, &identity, imp, &snap);
            match (want, got) {
                (Ok(()), Ok(())) => {}
                (Err(kind), Err(e)) => assert!(format!("{e:?}").starts_with(kind), "{name}: {e:?}"),
                (want, got) => panic!("{name}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn lifetimes_and_impersonation() {
        let p = CaPolicy::default();
        assert_eq!(lifetime(&p, 0), Ok(p.default_ttl));
        assert_eq!(lifetime(&p, 3600), Ok(Duration::from_secs(3600)));
        assert!(lifetime(&p, -1).is_err());
        assert!(lifetime(&p, (p.max_ttl.as_secs() + 1) as i64).is_err());
        let csr = id("spiffe://cluster.local/ns/a/sa/b");
        assert_eq!(requested_identity(&csr, None), Ok(csr.clone()));
        assert_eq!(
            requested_identity(&csr, Some("spiffe://cluster.local/ns/a/sa/b")),
            Ok(csr.clone())
        );
        assert!(matches!(
            requested_identity(&csr, Some("spiffe://cluster.local/ns/a/sa/c")),
            Err(Refusal::SanMismatch { .. })
        ));
        assert!(matches!(
            requested_identity(&csr, Some("not-spiffe")),
            Err(Refusal::BadImpersonation(_))
        ));
    }
}
