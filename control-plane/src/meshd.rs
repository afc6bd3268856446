//! Starting meshd: the CA and tokens, the source (a manifest directory or the cluster), the
//! pipeline, and the two ports. The binary parses flags into a [`Config`]; tests call
//! [`start`] in process.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hbone::FileCa;
use tokio::task::JoinHandle;

use crate::auth::LocalTokens;
use crate::ca::{CaPolicy, CaService};
use crate::debug::{self, Debug};
use crate::deploy::{self, Deployer, Namespaces, Observed, RootCertPublisher, Settings};
use crate::grpc::{self, ServingCert};
use crate::metrics::Metrics;
use crate::pipeline::{ConfigErrors, NodesHook, Pipeline};
use crate::snapshot::{self, SnapshotRx};
use crate::translate::Options;
use crate::xds::{AdsService, Clients};

/// Names the serving certificate always carries: how ztunnel addresses istiod
/// (`ALT_XDS_HOSTNAME=istiod.istio-system.svc`), plus loopback for local use.
pub const DEFAULT_SERVING_NAMES: &[&str] = &[
    "istiod.istio-system.svc",
    "istiod.istio-system.svc.cluster.local",
    "istiod",
    "localhost",
    "127.0.0.1",
];

/// Lifetime of the serving certificate (renewed at half).
const SERVING_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// The account node proxies run as; local node tokens are minted for it.
pub const NODE_PROXY_NAMESPACE: &str = "istio-system";
pub const NODE_PROXY_ACCOUNT: &str = "ztunnel";

#[derive(Debug, Clone)]
pub struct Config {
    /// The manifest directory; `None` reads a live cluster (in-cluster config or kubeconfig)
    /// and checks tokens with TokenReview.
    pub manifests: Option<PathBuf>,
    /// Istio `cacerts` layout; generated here at first start when it holds no CA.
    pub cacerts: PathBuf,
    /// HMAC key for local tokens; created at first start.
    pub token_key: PathBuf,
    /// Where to write `root-cert.pem` and `token-<node>` for local ztunnels.
    pub local_secrets: Option<PathBuf>,
    pub grpc_addr: SocketAddr,
    pub monitoring_addr: SocketAddr,
    /// Extra names for the serving certificate.
    pub dns_names: Vec<String>,
    pub debounce: Duration,
    pub poll: Duration,
    /// The mesh config file `translate.mesh` was read from: read again when it changes
    /// (polled every `poll`; `mesh_reload`).
    pub mesh_config: Option<PathBuf>,
    pub translate: Options,
    pub ca: CaPolicy,
    /// In a cluster, deploy each waypoint Gateway (`deploy`); `None` leaves that to someone
    /// else. Ignored with `manifests`.
    pub waypoints: Option<WaypointDeploy>,
    /// In a cluster, keep the `istio-ca-root-cert` ConfigMap in every namespace
    /// (`deploy::root_cert`); `None` leaves that to someone else. Ignored with `manifests`.
    pub root_cert: Option<RootCertPublish>,
}

/// How meshd publishes its roots in a cluster.
#[derive(Debug, Clone)]
pub struct RootCertPublish {
    /// Retries of a failed write start here and double up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RootCertPublish {
    fn default() -> Self {
        RootCertPublish {
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// How meshd deploys waypoints in a cluster.
#[derive(Debug, Clone)]
pub struct WaypointDeploy {
    /// The waypoint container's image.
    pub image: String,
    pub image_pull_policy: Option<String>,
    /// meshd as waypoint pods reach it (their `XDS_ADDRESS`).
    pub xds_address: String,
    /// Retries of a failed write start here and double up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl WaypointDeploy {
    /// meshd in `istio-system` under istiod's name, as ztunnel finds it.
    pub const DEFAULT_XDS_ADDRESS: &str = "https://istiod.istio-system.svc:15012";
    pub const DEFAULT_IMAGE: &str = "mesh/waypoint:latest";
}

impl Default for WaypointDeploy {
    fn default() -> Self {
        WaypointDeploy {
            image: Self::DEFAULT_IMAGE.into(),
            image_pull_policy: None,
            xds_address: Self::DEFAULT_XDS_ADDRESS.into(),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("certificate authority in {dir}")]
    Ca {
        dir: PathBuf,
        #[source]
        source: hbone::CaError,
    },
    #[error("token signing key {path}")]
    TokenKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("serving certificate")]
    Serving(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("manifest directory {dir}")]
    Manifests {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no --manifests and no Kubernetes cluster to read: neither in-cluster config \
         (KUBERNETES_SERVICE_HOST and a service account token) nor a kubeconfig \
         (KUBECONFIG or ~/.kube/config)"
    )]
    NoCluster(#[source] Box<kube::Error>),
    #[error("Kubernetes cluster")]
    Cluster(#[source] kube_source::ClusterError),
    #[error("listening")]
    Listen(#[source] std::io::Error),
    #[error("writing local secrets to {dir}")]
    Secrets {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A running meshd; dropping it stops its tasks.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub monitoring_addr: SocketAddr,
    pub tokens: Arc<LocalTokens>,
    /// PEM of the mesh roots (what `XDS_ROOT_CA` / `CA_ROOT_CA` point at).
    pub root_pem: String,
    pub metrics: Metrics,
    pub clients: Clients,
    pub snapshots: SnapshotRx,
    pub errors: ConfigErrors,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops every task and waits until they are gone (listeners closed, ports free).
    pub async fn stop(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Loads the CA from `dir`, or creates one there when it holds none.
pub fn load_or_generate_ca(dir: &Path) -> Result<FileCa, StartError> {
    let err = |source| StartError::Ca {
        dir: dir.to_path_buf(),
        source,
    };
    if dir.join("ca-key.pem").exists() {
        FileCa::load(dir).map_err(err)
    } else {
        tracing::info!(dir = %dir.display(), "no CA found; generating a new root CA");
        FileCa::generate(dir, "meshd").map_err(err)
    }
}

/// Starts meshd on `cfg.manifests`, or without it on the cluster the environment names
/// (in-cluster config or kubeconfig).
pub async fn start(cfg: Config) -> Result<Running, StartError> {
    let source = match &cfg.manifests {
        Some(dir) => Source::Manifests(dir.clone()),
        None => Source::Cluster(
            kube::Client::try_default()
                .await
                .map_err(|e| StartError::NoCluster(Box::new(e)))?,
        ),
    };
    start_on(cfg, source).await
}

/// Starts meshd on the cluster `client` speaks to, whatever `cfg.manifests` says.
pub async fn start_with_client(cfg: Config, client: kube::Client) -> Result<Running, StartError> {
    start_on(cfg, Source::Cluster(client)).await
}

enum Source {
    Manifests(PathBuf),
    Cluster(kube::Client),
}

async fn start_on(cfg: Config, source: Source) -> Result<Running, StartError> {
    let ca = Arc::new(load_or_generate_ca(&cfg.cacerts)?);
    let root_pem: String = ca
        .roots()
        .iter()
        .map(|r| hbone::pem_certificate(r))
        .collect();
    let tokens = Arc::new(
        LocalTokens::load_or_create(&cfg.token_key).map_err(|source| StartError::TokenKey {
            path: cfg.token_key.clone(),
            source,
        })?,
    );
    let mut names: Vec<String> = DEFAULT_SERVING_NAMES
        .iter()
        .map(|s| s.to_string())
        .collect();
    names.extend(cfg.dns_names.iter().cloned());
    let serving = ServingCert::new(serving_key(&ca, &names)?);
    let tls = grpc::server_config(serving.clone()).map_err(|e| StartError::Serving(Box::new(e)))?;

    if let Some(dir) = &cfg.local_secrets {
        write_secret(dir, "root-cert.pem", &root_pem).map_err(|source| StartError::Secrets {
            dir: dir.clone(),
            source,
        })?;
    }

    // Spawned only once everything has started: a failed start leaves nothing running.
    let mut controllers: Vec<Pin<Box<dyn Future<Output = ()> + Send>>> = Vec::new();
    let (initial, updates, cluster) = match source {
        Source::Manifests(dir) => {
            let (initial, updates) = kube_source::watch(dir.clone(), cfg.poll)
                .await
                .map_err(|source| StartError::Manifests { dir, source })?;
            (initial, updates, None)
        }
        Source::Cluster(client) => {
            let options = kube_source::ClusterOptions {
                config_map_name: cfg
                    .root_cert
                    .as_ref()
                    .map(|_| deploy::ROOT_CERT_CONFIG_MAP.to_string()),
                // The deployer puts back a waypoint Deployment that goes.
                deployments_labelled: cfg.waypoints.as_ref().map(|_| {
                    use crate::translate::labels::{GATEWAY_MANAGED, GATEWAY_MANAGED_MESH};
                    format!("{GATEWAY_MANAGED}={GATEWAY_MANAGED_MESH}")
                }),
                ..kube_source::ClusterOptions::default()
            };
            let (initial, mut updates) = kube_source::watch_cluster(client.clone(), options)
                .await
                .map_err(StartError::Cluster)?;
            if let Some(w) = &cfg.waypoints {
                let (rest, observed) = deploy::tee::<Observed>(&initial, updates);
                updates = rest;
                let d = Deployer {
                    client: client.clone(),
                    settings: Settings {
                        image: w.image.clone(),
                        image_pull_policy: w.image_pull_policy.clone(),
                        xds_address: w.xds_address.clone(),
                        cluster_id: cfg.translate.cluster_id.clone(),
                        trust_domain: cfg.translate.trust_domain.clone(),
                        domain_suffix: cfg.translate.domain_suffix.clone(),
                    },
                    min_backoff: w.min_backoff,
                    max_backoff: w.max_backoff,
                };
                controllers.push(Box::pin(d.run(observed)));
            }
            if let Some(r) = &cfg.root_cert {
                let (rest, view) = deploy::tee::<Namespaces>(&initial, updates);
                updates = rest;
                let p = RootCertPublisher {
                    client: client.clone(),
                    min_backoff: r.min_backoff,
                    max_backoff: r.max_backoff,
                };
                // meshd's roots are fixed for its lifetime (a new CA takes a restart, and
                // then every ConfigMap differs and is written again): the sender goes now.
                let (_, roots) = tokio::sync::watch::channel(root_pem.clone());
                controllers.push(Box::pin(p.run(view, roots)));
            }
            (initial, updates, Some(client))
        }
    };
    let metrics = Metrics::new();
    let clients = Clients::default();
    let errors: ConfigErrors = Arc::new(Mutex::new(Vec::new()));
    let (snap_tx, snap_rx) = snapshot::channel();

    let grpc_listener = debug::bind(cfg.grpc_addr)
        .await
        .map_err(StartError::Listen)?;
    let monitoring_listener = debug::bind(cfg.monitoring_addr)
        .await
        .map_err(StartError::Listen)?;
    let grpc_addr = grpc_listener.local_addr().map_err(StartError::Listen)?;
    let monitoring_addr = monitoring_listener
        .local_addr()
        .map_err(StartError::Listen)?;

    let on_nodes: NodesHook = match &cfg.local_secrets {
        Some(dir) => {
            let dir = dir.clone();
            let tokens = tokens.clone();
            Box::new(move |nodes: &BTreeSet<String>| write_node_tokens(&dir, &tokens, nodes))
        }
        None => Box::new(|_: &BTreeSet<String>| {}),
    };
    let (mesh_tx, mesh_rx) = tokio::sync::mpsc::channel(1);
    let pipeline = Pipeline {
        options: cfg.translate.clone(),
        debounce: cfg.debounce,
        snapshots: snap_tx,
        metrics: metrics.clone(),
        errors: errors.clone(),
        on_nodes,
        mesh: cfg.mesh_config.as_ref().map(|_| mesh_rx),
    };
    let auth_is_local = cluster.is_none();
    let auth: Arc<dyn crate::auth::Authenticator> = match cluster {
        Some(client) => Arc::new(crate::token_review::LocalThenReview {
            local: tokens.clone(),
            review: crate::token_review::TokenReview::new(client),
        }),
        None => tokens.clone(),
    };
    let ads = AdsService {
        snapshots: snap_rx.clone(),
        auth: auth.clone(),
        clients: clients.clone(),
        metrics: metrics.clone(),
    };
    let ca_service = CaService {
        ca: ca.clone(),
        auth,
        snapshots: snap_rx.clone(),
        policy: cfg.ca.clone(),
        metrics: metrics.clone(),
    };
    let debug = Debug {
        metrics: metrics.clone(),
        clients: clients.clone(),
        snapshots: snap_rx.clone(),
        errors: errors.clone(),
    };
    let mut tasks = vec![
        tokio::spawn(pipeline.run(initial, updates)),
        tokio::spawn(grpc::serve(grpc_listener, tls, ads, ca_service)),
        tokio::spawn(debug::serve(monitoring_listener, debug)),
        tokio::spawn(renew_serving(ca, names, serving)),
    ];
    tasks.extend(controllers.into_iter().map(tokio::spawn));
    if let Some(path) = &cfg.mesh_config {
        tasks.push(tokio::spawn(crate::mesh_reload::watch(
            path.clone(),
            cfg.poll,
            mesh_tx,
        )));
    }
    let source = match &cfg.manifests {
        Some(d) if auth_is_local => d.display().to_string(),
        _ => "cluster".to_string(),
    };
    tracing::info!(%grpc_addr, %monitoring_addr, %source, "meshd serving");
    Ok(Running {
        grpc_addr,
        monitoring_addr,
        tokens,
        root_pem,
        metrics,
        clients,
        snapshots: snap_rx,
        errors,
        tasks,
    })
}

fn serving_key(
    ca: &FileCa,
    names: &[String],
) -> Result<Arc<rustls::sign::CertifiedKey>, StartError> {
    let (chain, key) = ca
        .issue_serving(names, SERVING_LIFETIME)
        .map_err(|e| StartError::Serving(Box::new(e)))?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.into());
    let signer = hbone::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| StartError::Serving(Box::new(e)))?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(chain, signer)))
}

/// Reissues the serving certificate at half its lifetime (retrying each minute on failure).
async fn renew_serving(ca: Arc<FileCa>, names: Vec<String>, serving: ServingCert) {
    let mut next = SystemTime::now() + SERVING_LIFETIME / 2;
    loop {
        let wait = next
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait).await;
        match serving_key(&ca, &names) {
            Ok(key) => {
                serving.replace(key);
                tracing::info!("serving certificate renewed");
                next = SystemTime::now() + SERVING_LIFETIME / 2;
            }
            Err(e) => {
                tracing::warn!(error = %e, "serving certificate renewal failed; retrying in a minute");
                next = SystemTime::now() + Duration::from_secs(60);
            }
        }
    }
}

/// Writes `dir/name` atomically (temp file + rename), mode 0600.
fn write_secret(dir: &Path, name: &str, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))
}

/// A token file per node (`token-<node>`), kept when it still verifies.
fn write_node_tokens(dir: &Path, tokens: &LocalTokens, nodes: &BTreeSet<String>) {
    for node in nodes {
        let name = format!("token-{node}");
        let path = dir.join(&name);
        let current = std::fs::read_to_string(&path).ok();
        let valid = current
            .as_deref()
            .and_then(|t| tokens.verify(t.trim()).ok());
        if valid.is_some_and(|c| c.node.as_deref() == Some(node.as_str())) {
            continue;
        }
        let token = tokens.mint_node(NODE_PROXY_NAMESPACE, NODE_PROXY_ACCOUNT, node);
        match write_secret(dir, &name, &token) {
            Ok(()) => tracing::info!(path = %path.display(), "node token written"),
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot write node token"),
        }
    }
}
