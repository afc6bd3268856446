//! Readiness on 15021 (`/healthz/ready`), as Istio's proxies serve it: the waypoint binds it
//! only once it has a certificate and its first config, so a bound port means ready.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Answers `/healthz/ready` with 200 and anything else with 404, until the task is dropped.
pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let status = if req.uri().path() == "/healthz/ready" {
                        StatusCode::OK
                    } else {
                        StatusCode::NOT_FOUND
                    };
                    let mut resp = Response::new(Full::new(Bytes::new()));
                    *resp.status_mut() = status;
                    Ok::<_, Infallible>(resp)
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
