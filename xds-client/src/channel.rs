//! A gRPC channel to the control plane: TLS by rustls (ALPN `h2`, the server's name checked
//! as `ALT_XDS_HOSTNAME`/`ALT_CA_HOSTNAME` say), and the metadata istiod expects on every
//! call: `authorization: Bearer <token>` and headers such as `clusterid`.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("control plane address {0:?} is not an https:// URL with a host and port")]
    Address(String),
    #[error("TLS server name {0:?} is not a DNS name or IP address")]
    ServerName(String),
    #[error("connecting to {address} failed")]
    Connect {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("reading the token file {path}")]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("header {name:?}: not a valid gRPC metadata name or value")]
    Header { name: String },
}

/// The bearer token: a file re-read on every call (projected tokens rotate), or a literal.
#[derive(Debug, Clone)]
pub enum Token {
    File(PathBuf),
    Literal(String),
}

impl Token {
    /// Istio's `AUTH_TOKEN`: a path when such a file exists, else the token itself.
    pub fn from_env_value(v: &str) -> Token {
        let path = PathBuf::from(v);
        if path.is_file() {
            Token::File(path)
        } else {
            Token::Literal(v.to_string())
        }
    }

    pub fn read(&self) -> Result<String, ChannelError> {
        match self {
            Token::Literal(t) => Ok(t.trim().to_string()),
            Token::File(path) => std::fs::read_to_string(path)
                .map(|t| t.trim().to_string())
                .map_err(|source| ChannelError::Token {
                    path: path.clone(),
                    source,
                }),
        }
    }
}

/// Where and how to reach one gRPC service of the control plane.
#[derive(Clone)]
pub struct GrpcTarget {
    /// `https://host:port`.
    pub address: String,
    /// Trust roots set; ALPN is forced to `h2`.
    pub tls: Arc<rustls::ClientConfig>,
    /// The name the server's certificate must carry (default: the address's host).
    pub server_name: Option<String>,
    pub token: Option<Token>,
    /// Extra metadata on every call (lower-case names), e.g. `clusterid`.
    pub headers: Vec<(String, String)>,
    /// `SO_MARK` for the connection, so a proxy's own traffic capture skips it (ztunnel's
    /// `PACKET_MARK`); `None` leaves the socket unmarked.
    pub mark: Option<u32>,
}

impl std::fmt::Debug for GrpcTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcTarget")
            .field("address", &self.address)
            .field("server_name", &self.server_name)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

impl GrpcTarget {
    /// Wraps `message` in a request carrying the token and headers.
    pub fn request<T>(&self, message: T) -> Result<tonic::Request<T>, ChannelError> {
        let mut req = tonic::Request::new(message);
        let md = req.metadata_mut();
        if let Some(token) = &self.token {
            let value = format!("Bearer {}", token.read()?);
            let value = MetadataValue::try_from(value).map_err(|_| ChannelError::Header {
                name: "authorization".into(),
            })?;
            md.insert("authorization", value);
        }
        for (name, value) in &self.headers {
            let bad = || ChannelError::Header { name: name.clone() };
            let key =
                MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(|_| bad())?;
            let value = MetadataValue::try_from(value.as_str()).map_err(|_| bad())?;
            md.insert(key, value);
        }
        Ok(req)
    }
}

/// Opens a channel (one HTTP/2 connection) to `target`.
pub async fn connect(target: &GrpcTarget) -> Result<Channel, ChannelError> {
    let uri: Uri = target
        .address
        .parse()
        .map_err(|_| ChannelError::Address(target.address.clone()))?;
    if uri.scheme_str() != Some("https") || uri.host().is_none() || uri.port_u16().is_none() {
        return Err(ChannelError::Address(target.address.clone()));
    }
    let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
    let name = target
        .server_name
        .clone()
        .unwrap_or_else(|| host.to_string());
    let server_name =
        ServerName::try_from(name.clone()).map_err(|_| ChannelError::ServerName(name.clone()))?;
    let mut tls = (*target.tls).clone();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let connector = TlsConnect {
        tls: TlsConnector::from(Arc::new(tls)),
        server_name,
        mark: target.mark,
    };
    let endpoint = Endpoint::from(uri)
        .connect_timeout(std::time::Duration::from_secs(5))
        .http2_keep_alive_interval(std::time::Duration::from_secs(10))
        .keep_alive_timeout(std::time::Duration::from_secs(20))
        .keep_alive_while_idle(true);
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|source| ChannelError::Connect {
            address: target.address.clone(),
            source,
        })
}

/// Dials TCP (marked when asked), then TLS with a fixed server name.
#[derive(Clone)]
struct TlsConnect {
    tls: TlsConnector,
    server_name: ServerName<'static>,
    mark: Option<u32>,
}

/// Connects to the first address of `host:port` that answers, with `mark` set before connect.
async fn dial(host: &str, port: u16, mark: Option<u32>) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        if let Some(mark) = mark {
            socket2::SockRef::from(&socket).set_mark(mark)?;
        }
        match socket.connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other(format!("{host}: no address"))))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for TlsConnect {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        let name = self.server_name.clone();
        let mark = self.mark;
        Box::pin(async move {
            let host = uri.host().ok_or("address has no host")?;
            let host = host.trim_matches(['[', ']']).to_string();
            let port = uri.port_u16().ok_or("address has no port")?;
            let tcp = dial(&host, port, mark).await?;
            tcp.set_nodelay(true)?;
            let stream = tls.connect(name, tcp).await?;
            // No ALPN at all is tolerated (HTTP/2 with prior knowledge); anything else is not.
            if let Some(p) = stream.get_ref().1.alpn_protocol()
                && p != b"h2"
            {
                return Err("control plane chose a protocol other than HTTP/2 (ALPN h2)".into());
            }
            Ok(TokioIo::new(stream))
        })
    }
}

/// TLS for a control-plane endpoint: the server must chain to `roots`; no client certificate
/// (the bearer token authenticates the caller).
pub fn tls_with_roots(
    roots: Vec<rustls::pki_types::CertificateDer<'static>>,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r)?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(hbone::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(Arc::new(tls))
}
