//! The OTLP encoder: a batch of spans as one `ExportTraceServiceRequest`, sent with
//! `opentelemetry.proto.collector.trace.v1.TraceService/Export` over a plaintext HTTP/2
//! channel to the collector (made once, reconnecting by itself), or over OTLP/HTTP: the
//! request protobuf-encoded, `POST`ed to the collector's path (`application/x-protobuf`).
//!
//! Rules:
//! 1. One ResourceSpans (resource attribute `service.name`: the waypoint), one ScopeSpans
//!    (scope `waypoint`), the batch's spans in it.
//! 2. Ids are big-endian bytes: trace 16, span 8, parent 8 or none for a root span; `flags`
//!    carries the W3C sampled bit; times are Unix nanoseconds; kind SERVER.
//! 3. Tags are attributes; `http.status_code` is an integer (OpenTelemetry's type for it),
//!    the rest strings. A 5xx answer is status ERROR (as Envoy marks its span `error`), else
//!    UNSET.
//! 4. A gRPC error fails the batch; a partial success is logged with what was rejected.
//! 5. Over HTTP, any 2xx answer is success (its body, an `ExportTraceServiceResponse`, is not
//!    read); the provider's headers go with every export; the provider's timeout bounds
//!    each one.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prost::Message;

use proto::otlp::collector::ExportTraceServiceRequest;
use proto::otlp::collector::trace_service_client::TraceServiceClient;
use proto::otlp::common::{AnyValue, InstrumentationScope, KeyValue, any_value};
use proto::otlp::resource::Resource;
use proto::otlp::trace::{ResourceSpans, ScopeSpans, Span, Status, span, status};
use tonic::transport::{Channel, Endpoint};

use super::{OtlpHttp, Record, SEND_TIMEOUT};

pub(super) struct Sink {
    client: Result<TraceServiceClient<Channel>, String>,
    service: String,
}

impl Sink {
    pub fn new(collector: SocketAddr, service: &str) -> Sink {
        let client = Endpoint::from_shared(format!("http://{collector}"))
            .map(|e| e.connect_timeout(SEND_TIMEOUT).connect_lazy())
            .map(TraceServiceClient::new)
            .map_err(|e| format!("collector {collector}: {e}"));
        Sink {
            client,
            service: service.to_string(),
        }
    }

    /// Rule 4.
    pub async fn send(&mut self, batch: &[Record]) -> Result<(), String> {
        let client = self.client.as_mut().map_err(|e| e.clone())?;
        let req = request(batch, &self.service);
        let answer = client
            .export(req)
            .await
            .map_err(|s| format!("{}: {}", s.code(), s.message()))?
            .into_inner();
        if let Some(p) = answer.partial_success.filter(|p| p.rejected_spans > 0) {
            tracing::debug!(rejected = p.rejected_spans, error = %p.error_message, "collector rejected spans");
        }
        Ok(())
    }
}

/// Rule 5.
pub(super) struct HttpSink {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: String,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    timeout: Duration,
    service: String,
}

impl HttpSink {
    pub fn new(collector: &OtlpHttp, service: &str) -> HttpSink {
        HttpSink {
            client: Client::builder(TokioExecutor::new()).build_http(),
            uri: format!("http://{}{}", collector.collector, collector.path),
            headers: collector.headers.clone(),
            timeout: collector.timeout,
            service: service.to_string(),
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub async fn send(&mut self, batch: &[Record]) -> Result<(), String> {
        let body = request(batch, &self.service).encode_to_vec();
        let mut req = http::Request::post(&self.uri)
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        for (name, value) in &self.headers {
            req.headers_mut().insert(name.clone(), value.clone());
        }
        // The export loop bounds this by `timeout()`.
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        match resp.status().is_success() {
            true => Ok(()),
            false => Err(format!("collector answered {}", resp.status())),
        }
    }
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
    }
}

/// Rule 1.
pub(super) fn request(batch: &[Record], service: &str) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string("service.name", service)],
                dropped_attributes_count: 0,
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "waypoint".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans: batch.iter().map(encode).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// Rules 2-3.
fn encode(r: &Record) -> Span {
    let start = r.start_nanos();
    let attributes = r
        .tags
        .iter()
        .map(|(k, v)| match (*k, v.parse::<i64>()) {
            ("http.status_code", Ok(code)) => KeyValue {
                key: (*k).to_string(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::IntValue(code)),
                }),
            },
            _ => string(k, v),
        })
        .collect();
    let code = if r.status >= 500 {
        status::StatusCode::Error
    } else {
        status::StatusCode::Unset
    };
    Span {
        trace_id: r.trace_id.to_be_bytes().to_vec(),
        span_id: r.id.to_be_bytes().to_vec(),
        parent_span_id: r
            .parent
            .map(|p| p.to_be_bytes().to_vec())
            .unwrap_or_default(),
        flags: 1,
        name: r.name.clone(),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start
            .saturating_add(u64::try_from(r.duration.as_nanos()).unwrap_or(u64::MAX)),
        attributes,
        status: Some(Status {
            message: String::new(),
            code: code as i32,
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::*;

    #[test]
    fn a_record_becomes_an_otlp_span() {
        let r = Record {
            trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
            id: 0x12,
            parent: Some(0x00f067aa0ba902b7),
            start: UNIX_EPOCH + Duration::from_secs(2),
            duration: Duration::from_millis(3),
            name: "shop/api GET".into(),
            tags: vec![
                ("http.method", "GET".into()),
                ("http.status_code", "503".into()),
            ],
            status: 503,
        };
        let req = request(std::slice::from_ref(&r), "waypoint.shop");
        let rs = &req.resource_spans[0];
        assert_eq!(
            rs.resource.as_ref().unwrap().attributes,
            [string("service.name", "waypoint.shop")]
        );
        let s = &rs.scope_spans[0].spans[0];
        assert_eq!(
            s.trace_id,
            [
                0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
                0x47, 0x36
            ]
        );
        assert_eq!(s.span_id, [0, 0, 0, 0, 0, 0, 0, 0x12]);
        assert_eq!(
            s.parent_span_id,
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(s.kind, span::SpanKind::Server as i32);
        assert_eq!(s.start_time_unix_nano, 2_000_000_000);
        assert_eq!(s.end_time_unix_nano, 2_003_000_000);
        assert_eq!(s.attributes[0], string("http.method", "GET"));
        assert_eq!(
            s.attributes[1].value.as_ref().and_then(|v| v.value.clone()),
            Some(any_value::Value::IntValue(503))
        );
        assert_eq!(
            s.status.as_ref().map(|s| s.code),
            Some(status::StatusCode::Error as i32)
        );
        // A root span has no parent; a 2xx leaves the status unset.
        let root = Record {
            parent: None,
            status: 200,
            start: SystemTime::now(),
            ..r
        };
        let s = encode(&root);
        assert!(s.parent_span_id.is_empty());
        assert_eq!(
            s.status.as_ref().map(|s| s.code),
            Some(status::StatusCode::Unset as i32)
        );
    }
}
