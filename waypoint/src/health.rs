//! Readiness on 15021 (`/healthz/ready`), as Istio's proxies serve it: the waypoint binds it
//! only once it has a certificate and its first config, so a bound port means ready, until
//! the waypoint drains (then 503, so no new traffic is sent its way).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::Waypoint;

/// Answers `/healthz/ready` with 200 (503 once `waypoint` drains) and anything else with
/// 404, until the task is dropped.
pub async fn serve(listener: TcpListener, waypoint: Arc<Waypoint>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let waypoint = waypoint.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let draining = waypoint.is_draining();
                async move {
                    let status = match (req.uri().path(), draining) {
                        ("/healthz/ready", false) => StatusCode::OK,
                        ("/healthz/ready", true) => StatusCode::SERVICE_UNAVAILABLE,
                        _ => StatusCode::NOT_FOUND,
                    };
                    let mut resp = Response::new(Full::new(Bytes::new()));
                    *resp.status_mut() = status;
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
