//! Who is calling: bearer tokens on the xDS and CA port.
//!
//! In a cluster, tokens are Kubernetes service-account tokens checked by TokenReview (a later
//! source). Locally, meshd mints its own tokens in the same shape — a JWT whose claims say
//! `system:serviceaccount:<ns>:<sa>` and, under `kubernetes.io`, the pod and node it is bound
//! to — signed with HMAC-SHA256 under a key kept beside the CA. A node's ztunnel gets a token
//! for `istio-system/ztunnel` bound to its node; that binding is what the CA checks.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// The audience istio-agent and ztunnel tokens carry.
pub const AUDIENCE: &str = "istio-ca";

/// Lifetime of tokens minted for local use.
pub const LOCAL_TOKEN_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub namespace: String,
    pub service_account: String,
    /// The pod the token is bound to, if any.
    pub pod: Option<String>,
    /// The node the token is bound to (a node proxy's token), if any.
    pub node: Option<String>,
}

impl Caller {
    /// `namespace/service-account`, the form `CA_TRUSTED_NODE_ACCOUNTS` lists.
    pub fn account(&self) -> String {
        format!("{}/{}", self.namespace, self.service_account)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token (expected metadata `authorization: Bearer <token>`)")]
    Missing,
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    #[error("token signature does not verify (minted by another meshd?)")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token audience {0:?} does not include istio-ca")]
    Audience(Vec<String>),
    #[error("token subject {0:?} is not system:serviceaccount:<namespace>:<name>")]
    Subject(String),
    /// TokenReview answered that the token is not valid; the API server's reason.
    #[error("token rejected by the Kubernetes API server: {0}")]
    Rejected(String),
    /// TokenReview could not be asked (API server unreachable, meshd not allowed to create
    /// tokenreviews): the token may be good, so the caller should retry.
    #[error("cannot check the token with the Kubernetes API server: {0}")]
    Unavailable(String),
}

/// Checks a bearer token: meshd's own tokens locally, TokenReview in a cluster.
pub trait Authenticator: Send + Sync + 'static {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Caller, AuthError>> + Send + 'a>>;
}

impl Authenticator for LocalTokens {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Caller, AuthError>> + Send + 'a>> {
        Box::pin(std::future::ready(self.verify(token)))
    }
}

/// Authenticates the caller of a gRPC request from its `authorization` metadata.
pub async fn authenticate(
    auth: &dyn Authenticator,
    metadata: &tonic::metadata::MetadataMap,
) -> Result<Caller, AuthError> {
    let header = metadata.get("authorization").and_then(|v| v.to_str().ok());
    auth.authenticate(bearer(header)?).await
}

impl AuthError {
    /// The gRPC status for a refused caller: `UNAVAILABLE` when the token could not be checked
    /// (the client should retry), `UNAUTHENTICATED` otherwise.
    pub fn status(&self) -> tonic::Status {
        match self {
            AuthError::Unavailable(_) => {
                tonic::Status::unavailable(format!("cannot check the token now: {self}"))
            }
            _ => tonic::Status::unauthenticated(format!("authentication failed: {self}")),
        }
    }
}

/// The token from an `authorization` header value.
pub fn bearer(header: Option<&str>) -> Result<&str, AuthError> {
    let v = header.ok_or(AuthError::Missing)?;
    let token = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .ok_or(AuthError::Missing)?
        .trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    Ok(token)
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: Vec<String>,
    iat: u64,
    exp: u64,
    #[serde(rename = "kubernetes.io")]
    kubernetes: KubeClaims,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct KubeClaims {
    namespace: String,
    serviceaccount: Named,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pod: Option<Named>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node: Option<Named>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Named {
    name: String,
}

/// Mints and verifies meshd's local tokens.
pub struct LocalTokens {
    key: hmac::Key,
}

impl std::fmt::Debug for LocalTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalTokens")
    }
}

impl LocalTokens {
    pub fn from_secret(secret: &[u8]) -> Self {
        LocalTokens {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// Loads the signing secret from `path`, creating it (mode 0600) on first start.
    pub fn load_or_create(path: &Path) -> std::io::Result<Self> {
        match std::fs::read(path) {
            Ok(secret) if secret.len() >= 32 => return Ok(Self::from_secret(&secret)),
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "{}: token signing key is shorter than 32 bytes",
                    path.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut secret = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
            .map_err(|_| std::io::Error::other("no randomness for the token signing key"))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?
            .write_all(&secret)?;
        Ok(Self::from_secret(&secret))
    }

    /// A token for a node proxy: service account `namespace/service_account` bound to `node`.
    pub fn mint_node(&self, namespace: &str, service_account: &str, node: &str) -> String {
        self.mint(namespace, service_account, None, Some(node))
    }

    /// A token for a service account, bound to no pod or node (`kubectl create token`).
    pub fn mint_account(&self, namespace: &str, service_account: &str) -> String {
        self.mint(namespace, service_account, None, None)
    }

    /// A token for one pod's own service account.
    pub fn mint_pod(&self, namespace: &str, service_account: &str, pod: &str) -> String {
        self.mint(namespace, service_account, Some(pod), None)
    }

    fn mint(&self, ns: &str, sa: &str, pod: Option<&str>, node: Option<&str>) -> String {
        let now = unix_now();
        let claims = Claims {
            iss: "meshd".into(),
            sub: format!("system:serviceaccount:{ns}:{sa}"),
            aud: vec![AUDIENCE.into()],
            iat: now,
            exp: now + LOCAL_TOKEN_LIFETIME.as_secs(),
            kubernetes: KubeClaims {
                namespace: ns.into(),
                serviceaccount: Named { name: sa.into() },
                pod: pod.map(|p| Named { name: p.into() }),
                node: node.map(|n| Named { name: n.into() }),
            },
        };
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        // Serializing these plain structs cannot fail.
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let signed = format!("{header}.{body}");
        let sig = hmac::sign(&self.key, signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    /// Checks a token's signature, expiry, audience and subject.
    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let mut parts = token.split('.');
        let (Some(header), Some(body), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed("not three dot-separated parts"));
        };
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| AuthError::Malformed("signature is not base64url"))?;
        let signed_len = header.len() + 1 + body.len();
        hmac::verify(&self.key, &token.as_bytes()[..signed_len], &sig)
            .map_err(|_| AuthError::Signature)?;
        let body = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| AuthError::Malformed("claims are not base64url"))?;
        let claims: Claims = serde_json::from_slice(&body)
            .map_err(|_| AuthError::Malformed("claims are not the expected JSON"))?;
        if claims.exp <= unix_now() {
            return Err(AuthError::Expired);
        }
        if !claims.aud.iter().any(|a| a == AUDIENCE) {
            return Err(AuthError::Audience(claims.aud));
        }
        let (ns, sa) = claims
            .sub
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
            .filter(|(ns, sa)| !ns.is_empty() && !sa.is_empty() && !sa.contains(':'))
            .ok_or_else(|| AuthError::Subject(claims.sub.clone()))?;
        Ok(Caller {
            namespace: ns.to_string(),
            service_account: sa.to_string(),
            pod: claims.kubernetes.pod.map(|p| p.name),
            node: claims.kubernetes.node.map(|n| n.name),
        })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_verify_and_carry_their_binding() {
        let t = LocalTokens::from_secret(&[7; 32]);
        let node = t
            .verify(&t.mint_node("istio-system", "ztunnel", "node-a"))
            .unwrap();
        assert_eq!(node.account(), "istio-system/ztunnel");
        assert_eq!(node.node.as_deref(), Some("node-a"));
        assert_eq!(node.pod, None);
        let pod = t.verify(&t.mint_pod("shop", "cart", "cart-0")).unwrap();
        assert_eq!(pod.account(), "shop/cart");
        assert_eq!(pod.pod.as_deref(), Some("cart-0"));
        assert_eq!(pod.node, None);
    }

    #[test]
    fn refusals() {
        let t = LocalTokens::from_secret(&[7; 32]);
        let other = LocalTokens::from_secret(&[8; 32]);
        let good = t.mint_node("istio-system", "ztunnel", "n");
        assert_eq!(other.verify(&good), Err(AuthError::Signature));
        let mut tampered = good.clone();
        tampered.insert(good.find('.').unwrap() + 2, 'x');
        assert!(t.verify(&tampered).is_err());
        assert!(matches!(t.verify("a.b"), Err(AuthError::Malformed(_))));
        assert!(matches!(t.verify(""), Err(AuthError::Malformed(_))));
        assert!(matches!(t.verify("a.b.c"), Err(AuthError::Malformed(_))));
        assert_eq!(bearer(None), Err(AuthError::Missing));
        assert_eq!(bearer(Some("Basic abc")), Err(AuthError::Missing));
        assert_eq!(bearer(Some("Bearer ")), Err(AuthError::Missing));
        assert_eq!(bearer(Some("Bearer abc")), Ok("abc"));
    }

    #[test]
    fn signing_key_persists() {
        let path = std::env::temp_dir().join(format!("meshd-key-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let a = LocalTokens::load_or_create(&path).unwrap();
        let b = LocalTokens::load_or_create(&path).unwrap();
        let tok = a.mint_pod("a", "b", "c");
        assert!(
            b.verify(&tok).is_ok(),
            "a restarted meshd accepts its earlier tokens"
        );
        std::fs::remove_file(&path).unwrap();
    }
}
