//! Bearer tokens checked by the Kubernetes API server (TokenReview), as istiod checks them in
//! a cluster, with a short cache so every xDS stream and certificate request does not cost a
//! round trip.
//!
//! The rules, in order:
//! 1. A token accepted less than `ttl` ago (60 s by default) is accepted again without asking.
//!    Only acceptances are cached, keyed by the token's SHA-256 (the token itself is not
//!    kept); at most `capacity` entries, dropping expired ones first, then the one nearest
//!    to expiry.
//! 2. Otherwise meshd creates a TokenReview (`authentication.k8s.io/v1`) with audiences
//!    `["istio-ca"]`.
//! 3. `status.authenticated` not true: [`AuthError::Rejected`] with `status.error`. An answer
//!    naming audiences without `istio-ca`: [`AuthError::Audience`] (no audiences at all is an
//!    authenticator that does not check them, which Istio accepts too).
//! 4. `status.user.username` must be `system:serviceaccount:<namespace>:<name>`
//!    ([`AuthError::Subject`] otherwise). The pod and node a bound token belongs to come from
//!    `status.user.extra["authentication.kubernetes.io/pod-name"]` and `[".../node-name"]`.
//! 5. A review that could not be made (API server unreachable, a 403 because meshd may not
//!    create tokenreviews, a 5xx) is [`AuthError::Unavailable`] and is not cached.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::core::Request;
use kube::core::params::PostParams;
use serde::Deserialize;
use tokio::time::Instant;

use crate::auth::{AUDIENCE, AuthError, Authenticator, Caller, LocalTokens};

/// How long an accepted token is accepted again without asking.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Most tokens cached at once.
pub const DEFAULT_CAPACITY: usize = 4096;

const PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const NODE_NAME: &str = "authentication.kubernetes.io/node-name";

/// Checks tokens with TokenReview.
pub struct TokenReview {
    client: kube::Client,
    /// Tokens accepted lately. A plain mutex: held only to look up or insert, never across
    /// the request to the API server.
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for TokenReview {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenReview")
    }
}

impl TokenReview {
    pub fn new(client: kube::Client) -> Self {
        Self::with_cache(client, DEFAULT_TTL, DEFAULT_CAPACITY)
    }

    /// A zero `ttl` or `capacity` turns the cache off.
    pub fn with_cache(client: kube::Client, ttl: Duration, capacity: usize) -> Self {
        TokenReview {
            client,
            cache: Mutex::new(Cache::new(ttl, capacity)),
        }
    }

    /// Rules 1 to 5.
    pub async fn review(&self, token: &str) -> Result<Caller, AuthError> {
        let key = token_key(token);
        if let Some(caller) = self.cache().get(&key, Instant::now()) {
            return Ok(caller);
        }
        let caller = self.ask(token).await?;
        self.cache().insert(key, caller.clone(), Instant::now());
        Ok(caller)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn ask(&self, token: &str) -> Result<Caller, AuthError> {
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": [AUDIENCE]},
        });
        let request = Request::new(PATH)
            .create(&PostParams::default(), body.to_string().into_bytes())
            .map_err(|e| AuthError::Unavailable(chain(&e)))?;
        let review: Review = self
            .client
            .request(request)
            .await
            .map_err(|e| AuthError::Unavailable(unavailable(&e)))?;
        caller_from(review.status)
    }
}

impl Authenticator for TokenReview {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Caller, AuthError>> + Send + 'a>> {
        Box::pin(self.review(token))
    }
}

/// meshd's own tokens (what `--local-secrets` hands to local ztunnels) are checked locally;
/// any other token goes to TokenReview.
#[derive(Debug)]
pub struct LocalThenReview {
    pub local: Arc<LocalTokens>,
    pub review: TokenReview,
}

impl Authenticator for LocalThenReview {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Caller, AuthError>> + Send + 'a>> {
        Box::pin(async move {
            match self.local.verify(token) {
                // Not signed by this meshd: a Kubernetes token, for the API server to judge.
                Err(AuthError::Malformed(_) | AuthError::Signature) => {
                    self.review.review(token).await
                }
                verdict => verdict,
            }
        })
    }
}

#[derive(Debug, Default, Deserialize)]
struct Review {
    #[serde(default)]
    status: ReviewStatus,
}

#[derive(Debug, Default, Deserialize)]
struct ReviewStatus {
    #[serde(default)]
    authenticated: Option<bool>,
    #[serde(default)]
    user: UserInfo,
    #[serde(default)]
    audiences: Vec<String>,
    #[serde(default)]
    error: String,
}

#[derive(Debug, Default, Deserialize)]
struct UserInfo {
    #[serde(default)]
    username: String,
    #[serde(default)]
    extra: BTreeMap<String, Vec<String>>,
}

/// Rules 3 and 4.
fn caller_from(status: ReviewStatus) -> Result<Caller, AuthError> {
    if status.authenticated != Some(true) {
        let reason = if status.error.is_empty() {
            "not authenticated".to_string()
        } else {
            status.error
        };
        return Err(AuthError::Rejected(reason));
    }
    if !status.audiences.is_empty() && !status.audiences.iter().any(|a| a == AUDIENCE) {
        return Err(AuthError::Audience(status.audiences));
    }
    let user = status.user;
    let (namespace, service_account) = user
        .username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .filter(|(ns, sa)| !ns.is_empty() && !sa.is_empty() && !sa.contains(':'))
        .ok_or_else(|| AuthError::Subject(user.username.clone()))?;
    let extra = |key: &str| {
        user.extra
            .get(key)
            .and_then(|values| values.first())
            .filter(|v| !v.is_empty())
            .cloned()
    };
    Ok(Caller {
        namespace: namespace.to_string(),
        service_account: service_account.to_string(),
        pod: extra(POD_NAME),
        node: extra(NODE_NAME),
    })
}

/// Why a review could not be made, with the operator's next step where there is one.
fn unavailable(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(r) if r.code == 403 => format!(
            "{}: meshd's service account needs `create` on tokenreviews (bind it to the \
             system:auth-delegator ClusterRole)",
            r.message
        ),
        kube::Error::Api(r) => format!("{} ({} {})", r.message, r.code, r.reason),
        e => chain(e),
    }
}

/// An error and its causes on one line (`AuthError` carries text: it is compared in tests).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn token_key(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// Rule 1: accepted tokens by hash, each until its expiry.
#[derive(Debug)]
struct Cache {
    ttl: Duration,
    capacity: usize,
    entries: HashMap<[u8; 32], (Caller, Instant)>,
}

impl Cache {
    fn new(ttl: Duration, capacity: usize) -> Self {
        Cache {
            ttl,
            capacity,
            entries: HashMap::new(),
        }
    }

    fn get(&mut self, key: &[u8; 32], now: Instant) -> Option<Caller> {
        let (caller, expires) = self.entries.get(key)?;
        if *expires > now {
            return Some(caller.clone());
        }
        self.entries.remove(key);
        None
    }

    fn insert(&mut self, key: [u8; 32], caller: Caller, now: Instant) {
        if self.ttl.is_zero() || self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (_, expires)| *expires > now);
            if self.entries.len() >= self.capacity {
                let nearest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, expires))| *expires)
                    .map(|(k, _)| *k);
                if let Some(k) = nearest {
                    self.entries.remove(&k);
                }
            }
        }
        self.entries.insert(key, (caller, now + self.ttl));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(json: serde_json::Value) -> ReviewStatus {
        serde_json::from_value::<Review>(serde_json::json!({ "status": json }))
            .map(|r| r.status)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn review_answers() {
        let pod_bound = status(serde_json::json!({
            "authenticated": true,
            "user": {"username": "system:serviceaccount:istio-system:ztunnel",
                     "extra": {POD_NAME: ["ztunnel-x"], NODE_NAME: ["node-a"]}},
            "audiences": ["istio-ca"],
        }));
        assert_eq!(
            caller_from(pod_bound),
            Ok(Caller {
                namespace: "istio-system".into(),
                service_account: "ztunnel".into(),
                pod: Some("ztunnel-x".into()),
                node: Some("node-a".into()),
            })
        );
        let unbound = status(serde_json::json!({
            "authenticated": true, "user": {"username": "system:serviceaccount:shop:cart"},
        }));
        let caller = caller_from(unbound).expect("no audiences: not audience-aware");
        assert_eq!((caller.pod, caller.node), (None, None));

        let cases = [
            (
                serde_json::json!({"user": {}, "error": "[invalid bearer token]"}),
                AuthError::Rejected("[invalid bearer token]".into()),
            ),
            (
                serde_json::json!({"authenticated": false}),
                AuthError::Rejected("not authenticated".into()),
            ),
            (
                serde_json::json!({"authenticated": true, "audiences": ["api"],
                                   "user": {"username": "system:serviceaccount:a:b"}}),
                AuthError::Audience(vec!["api".into()]),
            ),
            (
                serde_json::json!({"authenticated": true, "user": {"username": "system:node:n1"}}),
                AuthError::Subject("system:node:n1".into()),
            ),
            (
                serde_json::json!({"authenticated": true,
                                   "user": {"username": "system:serviceaccount:a:b:c"}}),
                AuthError::Subject("system:serviceaccount:a:b:c".into()),
            ),
        ];
        for (answer, want) in cases {
            assert_eq!(caller_from(status(answer.clone())), Err(want), "{answer}");
        }
    }

    fn caller(name: &str) -> Caller {
        Caller {
            namespace: "ns".into(),
            service_account: name.into(),
            pod: None,
            node: None,
        }
    }

    #[test]
    fn cache_expires_and_stays_bounded() {
        let t0 = Instant::now();
        let mut cache = Cache::new(Duration::from_secs(60), 2);
        cache.insert(token_key("a"), caller("a"), t0);
        assert_eq!(
            cache.get(&token_key("a"), t0 + Duration::from_secs(59)),
            Some(caller("a"))
        );
        assert_eq!(
            cache.get(&token_key("a"), t0 + Duration::from_secs(60)),
            None
        );
        assert!(
            cache.entries.is_empty(),
            "an expired entry is dropped when met"
        );

        let t1 = t0 + Duration::from_secs(100);
        cache.insert(token_key("a"), caller("a"), t1);
        cache.insert(token_key("b"), caller("b"), t1 + Duration::from_secs(1));
        cache.insert(token_key("c"), caller("c"), t1 + Duration::from_secs(2));
        assert_eq!(cache.entries.len(), 2, "bounded");
        assert_eq!(
            cache.get(&token_key("a"), t1 + Duration::from_secs(3)),
            None,
            "oldest went"
        );
        assert!(
            cache
                .get(&token_key("c"), t1 + Duration::from_secs(3))
                .is_some()
        );

        let mut off = Cache::new(Duration::ZERO, 10);
        off.insert(token_key("a"), caller("a"), t0);
        assert_eq!(off.get(&token_key("a"), t0), None);
    }
}
