//! A CUSTOM policy's `provider.name` -> the `mesh.waypoint.v1.ExtAuthz` its HttpPolicy carries:
//! the MeshConfig extension provider, with its service resolved to an address the waypoint
//! dials.
//!
//! Rules, in order:
//! 1. The provider must be an `envoyExtAuthzHttp`/`envoyExtAuthzGrpc` provider of the mesh
//!    config; an unknown name is an error (the policy is then not sent, and its targets deny:
//!    fail closed).
//! 2. `service` is `[<namespace>/]<hostname>`, as Istio writes it. A hostname
//!    `<name>.<namespace>.svc.<domain suffix>` names that Kubernetes Service; its first VIP
//!    and the provider's `port` are the address (the destination's ztunnel takes plaintext
//!    there). A namespace given before `/` must agree with the hostname's. Ours: an IP
//!    literal is used as it is (an authorizer outside any Service, e.g. on a local machine).
//! 3. A service the index does not hold, or one without a VIP (headless), is an error: the
//!    waypoint would have nowhere to ask.

use std::net::{IpAddr, SocketAddr};

use proto::waypoint as pb;

use super::Options;
use crate::index::Index;
use crate::mesh_config::{ExtAuthzKind, ExtAuthzProvider};

/// Rules 1-3: the provider `name` as a CUSTOM HttpPolicy carries it.
pub fn resolve(index: &Index, opts: &Options, name: &str) -> Result<pb::ExtAuthz, String> {
    let p = opts.mesh.ext_authz.get(name).ok_or_else(|| {
        format!(
            "provider {name:?} is not an envoyExtAuthzHttp or envoyExtAuthzGrpc extension \
             provider of the mesh config (--mesh-config)"
        )
    })?;
    let ip = service_ip(index, opts, &p.service)
        .map_err(|e| format!("provider {name:?}: service {:?}: {e}", p.service))?;
    Ok(wire(p, SocketAddr::new(ip, p.port)))
}

pub(super) fn service_ip(index: &Index, opts: &Options, service: &str) -> Result<IpAddr, String> {
    let (given_ns, host) = match service.split_once('/') {
        Some((ns, host)) => (Some(ns), host),
        None => (None, service),
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    let suffix = format!(".svc.{}", opts.domain_suffix);
    let (name, ns) = host
        .strip_suffix(suffix.as_str())
        .and_then(|rest| rest.split_once('.'))
        .filter(|(name, ns)| !name.is_empty() && !ns.is_empty() && !ns.contains('.'))
        .ok_or_else(|| format!("not a Kubernetes service hostname (<name>.<namespace>{suffix})"))?;
    if given_ns.is_some_and(|g| g != ns) {
        return Err(format!(
            "namespace {given_ns:?} is not the hostname's ({ns})"
        ));
    }
    let svc = index
        .services_in(ns)
        .find(|s| s.metadata.name == name)
        .ok_or_else(|| "no such Service".to_string())?;
    svc.vips()
        .into_iter()
        .find_map(|v| v.parse::<IpAddr>().ok())
        .ok_or_else(|| "the Service has no cluster IP (headless?)".to_string())
}

fn wire(p: &ExtAuthzProvider, address: SocketAddr) -> pb::ExtAuthz {
    let protocol = match p.kind {
        ExtAuthzKind::Http => pb::ext_authz::Protocol::Http,
        ExtAuthzKind::Grpc => pb::ext_authz::Protocol::Grpc,
    };
    pb::ExtAuthz {
        name: p.name.clone(),
        protocol: protocol as i32,
        address: address.to_string(),
        timeout_ms: u32::try_from(p.timeout.as_millis())
            .unwrap_or(u32::MAX)
            .max(1),
        path_prefix: p.path_prefix.clone(),
        fail_open: p.fail_open,
        status_on_error: u32::from(p.status_on_error),
        include_request_headers_in_check: p.include_request_headers_in_check.clone(),
        include_additional_headers_in_check: p
            .include_additional_headers_in_check
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        headers_to_upstream_on_allow: p.headers_to_upstream_on_allow.clone(),
        headers_to_downstream_on_deny: p.headers_to_downstream_on_deny.clone(),
        headers_to_downstream_on_allow: p.headers_to_downstream_on_allow.clone(),
        include_request_body_in_check: p.include_request_body_in_check.map(|b| {
            pb::ext_authz::RequestBody {
                max_request_bytes: b.max_request_bytes,
                allow_partial_message: b.allow_partial_message,
                pack_as_bytes: b.pack_as_bytes,
            }
        }),
    }
}
