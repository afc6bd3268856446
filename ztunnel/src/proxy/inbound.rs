//! Inbound HBONE (15008): terminate mutual TLS, answer each CONNECT, carry its bytes to the
//! local workload.
//!
//! Rules (protocol.md 2.4): the authority must name an address of the local workload (else
//! 400) and not one of ztunnel's ports (else 503); if the app cannot be reached, 503. The 200
//! goes out only once the upstream connection is up.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::future::Either;
use hbone::{
    ConnectHandler, CopyError, InboundConnect, Responder, Target, Transferred,
    copy_bidirectional_until,
};
use http::{HeaderMap, StatusCode};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::access::ConnectionLog;
use super::{ProxyContext, policy};
use crate::metrics::ResponseFlags;
use crate::route::ILLEGAL_PORTS;
use crate::socket;
use crate::state::{State, Workload};

pub(super) async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<ProxyContext>,
    tls: Arc<ServerConfig>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let handler = Arc::new(Inbound { ctx: ctx.clone() });
    loop {
        let (tcp, peer) = socket::accept(&listener).await;
        let acceptor = acceptor.clone();
        let handler = handler.clone();
        let settings = ctx.settings.clone();
        tokio::spawn(async move {
            if let Err(e) = hbone::serve_connection(tcp, acceptor, &settings, handler).await {
                tracing::warn!(%peer, error = %super::access::error_chain(&e), "inbound HBONE connection refused or failed");
            }
        });
    }
}

struct Inbound {
    ctx: Arc<ProxyContext>,
}

#[derive(Debug, thiserror::Error)]
enum InboundError {
    #[error("target {0} is not an address of the local workload")]
    IpMismatch(String),
    #[error("target {0} is one of ztunnel's own ports")]
    IllegalPort(SocketAddr),
    #[error("no service {0} to resolve the target host")]
    UnknownHost(String),
    #[error("{0}")]
    Local(#[from] super::ProxyError),
    #[error("connecting to the application at {addr} failed")]
    Upstream {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("answering the CONNECT failed")]
    Respond(#[source] h2::Error),
}

impl Inbound {
    /// Where the stream goes and the local workload it reaches, or the status to refuse it with.
    fn resolve(
        &self,
        state: &State,
        target: &Target,
        log: &mut ConnectionLog,
    ) -> Result<(SocketAddr, Arc<Workload>), (StatusCode, InboundError)> {
        log.src_workload = log
            .src_identity
            .as_ref()
            .and_then(|_| state.workload_by_ip(log.src_addr.ip()).cloned());
        let local = self
            .ctx
            .local_workload(state)
            .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.into()))?;
        log.dst_workload = Some(local.clone());
        let addr = match target {
            Target::Addr(a) => *a,
            Target::Host(host, port) => {
                let service = state.service_by_hostname(host).ok_or_else(|| {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        InboundError::UnknownHost(host.clone()),
                    )
                })?;
                log.dst_service = Some(service.clone());
                let target_port = local
                    .services
                    .get(&service.key())
                    .and_then(|p| p.get(port))
                    .or_else(|| service.ports.get(port))
                    .copied()
                    .filter(|p| *p != 0)
                    .unwrap_or(*port);
                let ip = local.ips.first().copied().ok_or_else(|| {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        InboundError::UnknownHost(host.clone()),
                    )
                })?;
                SocketAddr::new(ip, target_port)
            }
        };
        if let Target::Addr(a) = target
            && !local.ips.contains(&a.ip())
        {
            return Err((
                StatusCode::BAD_REQUEST,
                InboundError::IpMismatch(a.to_string()),
            ));
        }
        if ILLEGAL_PORTS.contains(&addr.port()) {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                InboundError::IllegalPort(addr),
            ));
        }
        Ok((addr, local))
    }
}

/// An allowed CONNECT: what its task needs for the rest of the connection's life.
pub(super) struct Admitted {
    addr: SocketAddr,
    responder: Responder,
    log: ConnectionLog,
    registration: policy::Registration,
}

impl Inbound {
    /// Resolves the target and checks policy, synchronously: the request, the state snapshot
    /// and the verdict are gone before the connection's long-lived task starts. Refuses (and
    /// logs) what may not go ahead.
    fn admit(&self, request: InboundConnect) -> Option<Admitted> {
        let InboundConnect {
            peer,
            target,
            headers,
            responder,
        } = request;
        drop(headers);
        let mut log = ConnectionLog::new("inbound", peer.remote, self.ctx.metrics.clone());
        log.src_identity = Some(peer.identity.clone());
        log.dst_identity = Some(self.ctx.identity.clone());
        log.dst_hbone_addr = Some(peer.local);
        let state = self.ctx.state.load();
        let (addr, local) = match self.resolve(&state, &target, &mut log) {
            Ok(a) => a,
            Err((status, e)) => {
                responder.refuse(status);
                log.finish(Transferred::default(), Some(&e));
                return None;
            }
        };
        log.dst_addr = Some(addr);
        let conn = policy::connection(peer.remote, addr, Some(&peer.identity));
        let verdict = policy::check(&state, &local, &conn);
        if !verdict.allowed {
            responder.refuse(StatusCode::UNAUTHORIZED);
            super::inbound_plain::deny(&self.ctx, &mut log, &verdict);
            log.finish(Transferred::default(), Some(&policy::Denied));
            return None;
        }
        let registration =
            self.ctx
                .registry
                .register(&local, peer.remote, addr, Some(&peer.identity));
        Some(Admitted {
            addr,
            responder,
            log,
            registration,
        })
    }
}

impl ConnectHandler for Inbound {
    fn handle(
        self: Arc<Self>,
        request: InboundConnect,
    ) -> impl Future<Output = ()> + Send + 'static {
        match self.admit(request) {
            Some(admitted) => Either::Left(carry(self.ctx.clone(), admitted)),
            None => Either::Right(std::future::ready(())),
        }
    }
}

/// Connects to the application, answers 200, and copies until the connection ends or policy
/// revokes it.
pub(super) async fn carry(ctx: Arc<ProxyContext>, admitted: Admitted) {
    let Admitted {
        addr,
        responder,
        mut log,
        registration,
    } = admitted;
    let mut upstream = match socket::connect(addr, None, ctx.mark, ctx.netns.as_deref()).await {
        Ok(u) => u,
        Err(source) => {
            responder.refuse(StatusCode::SERVICE_UNAVAILABLE);
            log.flags = ResponseFlags::Connect;
            log.finish(
                Transferred::default(),
                Some(&InboundError::Upstream { addr, source }),
            );
            return;
        }
    };
    let stream = match responder.accept(HeaderMap::new()) {
        Ok(s) => s,
        Err(e) => {
            log.finish(Transferred::default(), Some(&InboundError::Respond(e)));
            return;
        }
    };
    log.opened();
    let revocation = &registration.revocation;
    match copy_bidirectional_until(&mut upstream, stream, async {
        revocation.revoked().await;
    })
    .await
    {
        Ok(moved) => log.finish(moved, None),
        Err((CopyError::Stopped, moved)) => {
            hbone::reset_tcp(&upstream);
            log.flags = ResponseFlags::Deny;
            log.policy = registration.revocation.reason();
            log.finish(moved, Some(&policy::Revoked));
        }
        Err((e, moved)) => {
            if e.is_reset() {
                hbone::reset_tcp(&upstream);
            }
            log.finish(moved, Some(&e));
        }
    }
}
