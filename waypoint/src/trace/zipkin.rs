//! The Zipkin encoder: a batch of spans as Zipkin v2 JSON, `POST /api/v2/spans`.
//!
//! Rules:
//! 1. Ids are lower-case hex (trace 32 digits, spans 16); times are microseconds; every tag
//!    is a string (Zipkin's tags are); the waypoint is `localEndpoint.serviceName`.
//! 2. Any 2xx answer is success.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::Record;

pub(super) struct Sink {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: String,
    service: String,
}

impl Sink {
    pub fn new(collector: SocketAddr, service: &str) -> Sink {
        Sink {
            client: Client::builder(TokioExecutor::new()).build_http(),
            uri: format!("http://{collector}/api/v2/spans"),
            service: service.to_string(),
        }
    }

    /// Rule 2.
    pub async fn send(&mut self, batch: &[Record]) -> Result<(), String> {
        let body =
            serde_json::Value::Array(batch.iter().map(|r| encode(r, &self.service)).collect())
                .to_string();
        let req = http::Request::post(&self.uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("collector answered {}", resp.status()))
        }
    }
}

/// Rule 1.
fn encode(r: &Record, service: &str) -> serde_json::Value {
    let tags: serde_json::Map<String, serde_json::Value> = r
        .tags
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.clone().into()))
        .collect();
    let mut json = serde_json::json!({
        "traceId": format!("{:032x}", r.trace_id),
        "id": format!("{:016x}", r.id),
        "kind": "SERVER",
        "name": r.name,
        "timestamp": r.start_nanos() / 1_000,
        "duration": u64::try_from(r.duration.as_micros()).unwrap_or(u64::MAX).max(1),
        "localEndpoint": { "serviceName": service },
        "tags": tags,
    });
    if let (Some(p), Some(obj)) = (r.parent, json.as_object_mut()) {
        obj.insert("parentId".into(), format!("{p:016x}").into());
    }
    json
}
