//! Key sets fetched from `jwksUri`, and OpenID discovery documents fetched from issuers
//! ([`super::discovery`]), each cached per URI for every target that names it.
//!
//! Rules, in order, for both kinds of document (a key set is the example):
//! 1. A URI's keys are fetched the first time a token needs them; the request waits for that
//!    fetch (bounded by the rule's timeout) and fails with Envoy's `Jwks remote fetch is
//!    failed` when there is nothing to use.
//! 2. Keys older than the refresh interval (20 minutes) are still used while a background
//!    fetch replaces them; a failed fetch keeps the old keys and is tried again no sooner than
//!    rule 3's interval.
//! 3. A token whose `kid` the cached set lacks asks for a fetch now (key rotation), at most
//!    once per 30 seconds per URI, so a flood of made-up `kid`s costs one fetch. (Key sets
//!    only: a discovery document changes at its refresh.)
//! 4. One fetch per URI at a time: concurrent requests wait for the one under way and take
//!    its outcome. With nothing cached, a failed fetch is not retried for a second (Envoy's
//!    `failed_refetch_duration`), so a dead server is not asked once per request.
//! 5. HTTP and HTTPS (the system's roots), HTTP/1.1, a 2xx answer of at most 1 MiB.
//! 6. A discovered key set is cached under its `jwks_uri` like a configured one: rules 1-4
//!    apply to it unchanged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use super::discovery::{self, DiscoveryError};
use super::keys::{KeySet, KeysError};

/// Rule 5.
const MAX_BODY: usize = 1 << 20;

/// How often keys are refreshed and refetched.
#[derive(Debug, Clone, Copy)]
pub struct FetchSettings {
    /// Rule 2.
    pub refresh: Duration,
    /// Rule 3.
    pub min_refetch: Duration,
}

impl Default for FetchSettings {
    fn default() -> Self {
        FetchSettings {
            refresh: Duration::from_secs(20 * 60),
            min_refetch: Duration::from_secs(30),
        }
    }
}

/// Why keys could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("fetching {uri}: timed out after {timeout:?}")]
    Timeout { uri: Uri, timeout: Duration },
    #[error("fetching {uri}")]
    Request {
        uri: Uri,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("fetching {uri}: HTTP status {status}")]
    Status { uri: Uri, status: http::StatusCode },
    #[error("fetching {uri}: reading the body (at most 1 MiB)")]
    Body {
        uri: Uri,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("fetching {uri}: the body is not UTF-8")]
    Utf8 { uri: Uri },
    #[error("fetching {uri}: failed less than a second ago")]
    Recent { uri: Uri },
    #[error("fetching {uri}")]
    Unreadable {
        uri: Uri,
        #[source]
        source: Unreadable,
    },
}

/// Why a fetched body is not the document it should be.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    #[error("not a usable JSON Web Key Set")]
    Keys(#[source] KeysError),
    #[error("not a usable OpenID discovery document")]
    Discovery(#[source] DiscoveryError),
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Fetches one URI (rule 5).
#[derive(Clone)]
struct Fetcher {
    client: HttpsClient,
}

impl Fetcher {
    fn new() -> Fetcher {
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = match builder.with_native_roots() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "no system trust roots: jwksUri over HTTPS will fail");
                let roots = tokio_rustls::rustls::RootCertStore::empty();
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                    tokio_rustls::rustls::ClientConfig::builder()
                        .with_root_certificates(roots)
                        .with_no_client_auth(),
                )
            }
        };
        let connector = builder.https_or_http().enable_http1().build();
        Fetcher {
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// The body of a 2xx answer, as text.
    async fn fetch(&self, uri: &Uri, timeout: Duration) -> Result<String, FetchError> {
        let get = async {
            let resp =
                self.client
                    .get(uri.clone())
                    .await
                    .map_err(|source| FetchError::Request {
                        uri: uri.clone(),
                        source,
                    })?;
            if !resp.status().is_success() {
                return Err(FetchError::Status {
                    uri: uri.clone(),
                    status: resp.status(),
                });
            }
            let body = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|source| FetchError::Body {
                    uri: uri.clone(),
                    source,
                })?
                .to_bytes();
            String::from_utf8(Vec::from(body)).map_err(|_| FetchError::Utf8 { uri: uri.clone() })
        };
        tokio::time::timeout(timeout, get)
            .await
            .map_err(|_| FetchError::Timeout {
                uri: uri.clone(),
                timeout,
            })?
    }
}

/// How one kind of document reads, and its name for logs.
struct Kind<T> {
    what: &'static str,
    parse: fn(&str) -> Result<T, Unreadable>,
}

impl<T> Clone for Kind<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Kind<T> {}

/// What is known of one URI.
struct State<T> {
    doc: Option<Arc<T>>,
    /// When `doc` arrived.
    fetched: Option<Instant>,
    /// When the last fetch started (rule 3).
    attempted: Option<Instant>,
    /// When the last fetch failed (rule 4).
    failed: Option<Instant>,
    /// A background refresh is under way (rule 2).
    refreshing: bool,
}

struct Entry<T> {
    state: Mutex<State<T>>,
    /// Held while fetching (rule 4); the state is re-read once it is taken.
    fetching: tokio::sync::Mutex<()>,
}

impl<T> Default for Entry<T> {
    fn default() -> Self {
        Entry {
            state: Mutex::new(State {
                doc: None,
                fetched: None,
                attempted: None,
                failed: None,
                refreshing: false,
            }),
            fetching: tokio::sync::Mutex::new(()),
        }
    }
}

fn lock<S>(m: &Mutex<S>) -> MutexGuard<'_, S> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Every URI's entry for one kind of document (rules 1-4).
struct Table<T> {
    kind: Kind<T>,
    /// One entry per URI ever used; an entry is a few hundred bytes.
    entries: Mutex<HashMap<Uri, Arc<Entry<T>>>>,
}

impl<T: Send + Sync + 'static> Table<T> {
    fn new(what: &'static str, parse: fn(&str) -> Result<T, Unreadable>) -> Table<T> {
        Table {
            kind: Kind { what, parse },
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn entry(&self, uri: &Uri) -> Arc<Entry<T>> {
        lock(&self.entries).entry(uri.clone()).or_default().clone()
    }

    /// Rules 1 and 2.
    async fn get(
        &self,
        fetcher: &Fetcher,
        settings: FetchSettings,
        uri: &Uri,
        timeout: Duration,
    ) -> Result<Arc<T>, FetchError> {
        let entry = self.entry(uri);
        let now = Instant::now();
        {
            let mut s = lock(&entry.state);
            if let (Some(doc), Some(fetched)) = (&s.doc, s.fetched) {
                let doc = doc.clone();
                let stale = now.duration_since(fetched) >= settings.refresh;
                let may_retry = s
                    .attempted
                    .is_none_or(|a| now.duration_since(a) >= settings.min_refetch);
                if stale && may_retry && !s.refreshing {
                    s.refreshing = true;
                    let (entry, fetcher, uri, kind) =
                        (entry.clone(), fetcher.clone(), uri.clone(), self.kind);
                    tokio::spawn(async move {
                        let _ = fetch_into(&entry, &fetcher, kind, &uri, timeout, None).await;
                        lock(&entry.state).refreshing = false;
                    });
                }
                return Ok(doc);
            }
        }
        fetch_into(&entry, fetcher, self.kind, uri, timeout, None).await
    }

    /// Rule 3: a fresh document replacing `stale`; `None` when a fetch is not allowed yet or
    /// fails (the caller keeps what it had).
    async fn refetch(
        &self,
        fetcher: &Fetcher,
        settings: FetchSettings,
        uri: &Uri,
        timeout: Duration,
        stale: &Arc<T>,
    ) -> Option<Arc<T>> {
        let entry = self.entry(uri);
        let allowed = lock(&entry.state)
            .attempted
            .is_none_or(|t| t.elapsed() >= settings.min_refetch);
        if !allowed {
            return None;
        }
        fetch_into(&entry, fetcher, self.kind, uri, timeout, Some(stale))
            .await
            .ok()
            .filter(|d| !Arc::ptr_eq(d, stale))
    }
}

/// Every URI's key set and every issuer's discovery document (rules 1-6), shared by all
/// targets.
pub struct KeyCache {
    /// Made on first use (it reads the system's trust roots).
    fetcher: OnceLock<Fetcher>,
    settings: FetchSettings,
    keys: Table<KeySet>,
    /// Discovery document URL -> the `jwks_uri` it names.
    discovery: Table<Uri>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl KeyCache {
    pub fn new(settings: FetchSettings) -> KeyCache {
        KeyCache {
            fetcher: OnceLock::new(),
            settings,
            keys: Table::new("JWKS", |text| KeySet::parse(text).map_err(Unreadable::Keys)),
            discovery: Table::new("OpenID discovery document", |text| {
                discovery::parse_document(text).map_err(Unreadable::Discovery)
            }),
        }
    }

    fn fetcher(&self) -> &Fetcher {
        self.fetcher.get_or_init(Fetcher::new)
    }

    /// Rules 1 and 2: the keys to check a token with.
    pub async fn keys(&self, uri: &Uri, timeout: Duration) -> Result<Arc<KeySet>, FetchError> {
        self.keys
            .get(self.fetcher(), self.settings, uri, timeout)
            .await
    }

    /// Rule 3: fresh keys for a token whose `kid` `stale` lacks; `None` when a fetch is not
    /// allowed yet or fails (the caller keeps what it had).
    pub async fn refetch(
        &self,
        uri: &Uri,
        timeout: Duration,
        stale: &Arc<KeySet>,
    ) -> Option<Arc<KeySet>> {
        self.keys
            .refetch(self.fetcher(), self.settings, uri, timeout, stale)
            .await
    }

    /// Rule 6: the key set URI that the discovery document at `document` names (rules 1, 2
    /// and 4 for the document); its keys are then [`KeyCache::keys`]'.
    pub async fn discovered(
        &self,
        document: &Uri,
        timeout: Duration,
    ) -> Result<Arc<Uri>, FetchError> {
        self.discovery
            .get(self.fetcher(), self.settings, document, timeout)
            .await
    }
}

/// Fetches `uri` into `entry` (rule 4). When another fetch started while this one waited for
/// its turn, its outcome is taken instead: its document when it is not `seen` (the one the
/// caller already has), else its failure.
async fn fetch_into<T>(
    entry: &Entry<T>,
    fetcher: &Fetcher,
    kind: Kind<T>,
    uri: &Uri,
    timeout: Duration,
    seen: Option<&Arc<T>>,
) -> Result<Arc<T>, FetchError> {
    let asked = Instant::now();
    let _turn = entry.fetching.lock().await;
    {
        let mut s = lock(&entry.state);
        let newer = s
            .doc
            .as_ref()
            .filter(|d| seen.is_none_or(|seen| !Arc::ptr_eq(d, seen)));
        let since = |t: Option<Instant>| t.is_some_and(|t| t >= asked);
        if since(s.attempted) || since(s.fetched) || since(s.failed) {
            return newer
                .cloned()
                .ok_or(FetchError::Recent { uri: uri.clone() });
        }
        let recent_failure = s
            .failed
            .is_some_and(|f| f.elapsed() < Duration::from_secs(1));
        if s.doc.is_none() && recent_failure {
            return Err(FetchError::Recent { uri: uri.clone() });
        }
        s.attempted = Some(Instant::now());
    }
    let fetched = match fetcher.fetch(uri, timeout).await {
        Ok(text) => (kind.parse)(&text).map_err(|source| FetchError::Unreadable {
            uri: uri.clone(),
            source,
        }),
        Err(e) => Err(e),
    };
    let mut s = lock(&entry.state);
    match fetched {
        Ok(doc) => {
            tracing::debug!(%uri, "{} fetched", kind.what);
            let doc = Arc::new(doc);
            s.doc = Some(doc.clone());
            s.fetched = Some(Instant::now());
            s.failed = None;
            Ok(doc)
        }
        Err(e) => {
            tracing::warn!(error = %format_chain(&e), "{} fetch failed", kind.what);
            s.failed = Some(Instant::now());
            Err(e)
        }
    }
}

fn format_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
