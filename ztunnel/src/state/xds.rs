//! xDS resources (protocol.md 4.2, 4.3) into ztunnel's state: the one place wire types become
//! domain types, and the store of what istiod has sent so far.
//!
//! Why one boundary: every later stage (routing, policy, metrics) then works on values that are
//! known to be well formed, and every rejection is reported once, naming the resource and the
//! proto field, which is what the NACK carries back to istiod.
//!
//! The rules, in order:
//! 1. Conversion is per resource. A resource that fails is rejected as a whole and reported; it
//!    is not applied, and any earlier version of it stays. The rest of the batch still applies
//!    (istiod expects this: "valid resources from the same response are still applied").
//! 2. A resource's xDS name must equal the key of its content: a workload's `uid`, a service's
//!    `namespace/hostname`, a policy's `namespace/name`.
//! 3. Validation follows the local config (`local.rs`): a workload needs a namespace and an
//!    address or hostname, its identity must be a valid SPIFFE ID (empty trust domain means
//!    `cluster.local`, empty service account `default`), service SANs must be SPIFFE IDs.
//! 4. Enum values this build does not know are rejected, naming the field, as are
//!    `LEGACY_ISTIO_MTLS` tunnels, addresses that are not 4 or 16 bytes, prefix lengths past the
//!    address width and ports past 65535 — also in fields the domain model does not keep yet
//!    (network gateways, weighted waypoints, application tunnel, load balancing), so the NACK is
//!    the same once it does.
//! 5. Waypoints are modelled: workload and service `waypoint` (a `GatewayAddress`: a
//!    `namespace/hostname`, neither part empty, or a `network/IP`; and `hbone_mtls_port`, 0
//!    meaning 15008) become [`GatewayRef`]s. Only the primary waypoint is kept: `weighted_waypoints` is
//!    validated and dropped, so a service with a canary waypoint always uses its primary.
//! 6. Fields the domain does not model are validated and dropped: workload `network`,
//!    `network_gateway`, `native_tunnel`, `application_tunnel`, `network_mode`, `capacity`,
//!    `workload_type`; service `weighted_waypoints`, `load_balancing`, `ip_families`,
//!    `canonical`, `visibility` and CIDR VIPs (`length` shorter than the address); `extensions`
//!    everywhere (as Istio's ztunnel does).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hbone::{DEFAULT_SERVICE_ACCOUNT, DEFAULT_TRUST_DOMAIN, IdentityError, SpiffeId};
use proto::security as xsec;
use proto::workload as xwl;

use super::{GatewayDestination, GatewayRef, Locality, Protocol, Service, State, Workload};

/// Why an xDS resource was rejected. `resource` describes the resource ("workload <uid>",
/// "service <ns>/<hostname>", "policy <ns>/<name>"); `field` is the proto field path.
#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    #[error("{resource}: field {field}: {reason}")]
    Field {
        resource: String,
        field: String,
        reason: String,
    },
    #[error(
        "{resource}: field {field}: unknown enum value {value} (is istiod newer than this ztunnel?)"
    )]
    UnknownEnum {
        resource: String,
        field: String,
        value: i32,
    },
    #[error("{resource}: field {field}: {source}")]
    Identity {
        resource: String,
        field: String,
        #[source]
        source: IdentityError,
    },
    #[error("resource name {name:?} does not match the key of its content, {key:?}")]
    Name { name: String, key: String },
    /// For the xDS client, which decodes the `Any` payloads (this crate has no prost).
    #[error("{resource}: cannot decode: {source}")]
    Decode {
        resource: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The resource being converted, for error messages.
struct Ctx {
    resource: String,
}

impl Ctx {
    fn new(kind: &str, key: String) -> Self {
        Ctx {
            resource: format!("{kind} {key}"),
        }
    }

    fn field(&self, field: impl Into<String>, reason: impl Into<String>) -> XdsError {
        XdsError::Field {
            resource: self.resource.clone(),
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn required(&self, field: &str, value: &str) -> Result<(), XdsError> {
        if value.is_empty() {
            return Err(self.field(field, "required"));
        }
        Ok(())
    }

    /// A known value of a proto3 open enum.
    fn known<E: TryFrom<i32>>(&self, field: impl Into<String>, value: i32) -> Result<E, XdsError> {
        E::try_from(value).map_err(|_| XdsError::UnknownEnum {
            resource: self.resource.clone(),
            field: field.into(),
            value,
        })
    }

    fn port(&self, field: impl Into<String>, value: u32) -> Result<u16, XdsError> {
        u16::try_from(value)
            .map_err(|_| self.field(field, format!("{value} is not a port (0-65535)")))
    }

    fn ip(&self, field: impl Into<String>, bytes: &[u8]) -> Result<IpAddr, XdsError> {
        ip_from_bytes(bytes).ok_or_else(|| {
            self.field(
                field,
                format!(
                    "{} bytes; an address is 4 (IPv4) or 16 (IPv6) bytes",
                    bytes.len()
                ),
            )
        })
    }

    fn identity(
        &self,
        id: Result<SpiffeId, IdentityError>,
        field: &str,
    ) -> Result<SpiffeId, XdsError> {
        id.map_err(|source| XdsError::Identity {
            resource: self.resource.clone(),
            field: identity_field(&source, field).to_string(),
            source,
        })
    }

    fn gateway(&self, field: &str, g: &xwl::GatewayAddress) -> Result<GatewayRef, XdsError> {
        use xwl::gateway_address::Destination;
        let destination = match &g.destination {
            None => {
                return Err(self.field(
                    format!("{field}.destination"),
                    "required: a hostname or an address",
                ));
            }
            Some(Destination::Hostname(h)) => {
                self.required(
                    &format!("{field}.destination.hostname.namespace"),
                    &h.namespace,
                )?;
                self.required(
                    &format!("{field}.destination.hostname.hostname"),
                    &h.hostname,
                )?;
                GatewayDestination::Hostname {
                    namespace: h.namespace.clone(),
                    hostname: h.hostname.clone(),
                }
            }
            Some(Destination::Address(a)) => GatewayDestination::Address {
                network: a.network.clone(),
                ip: self.ip(format!("{field}.destination.address.address"), &a.address)?,
            },
        };
        let port = self.port(format!("{field}.hbone_mtls_port"), g.hbone_mtls_port)?;
        Ok(GatewayRef::new(destination, port))
    }

    /// Service port -> target port; ports past 65535 and unknown app protocols are rejected.
    fn ports(&self, field: &str, ports: &[xwl::Port]) -> Result<HashMap<u16, u16>, XdsError> {
        let mut out = HashMap::with_capacity(ports.len());
        for (i, p) in ports.iter().enumerate() {
            let at = format!("{field}[{i}]");
            let service = self.port(format!("{at}.service_port"), p.service_port)?;
            let target = self.port(format!("{at}.target_port"), p.target_port)?;
            let _: xwl::AppProtocol = self.known(format!("{at}.app_protocol"), p.app_protocol)?;
            out.insert(service, target);
        }
        Ok(out)
    }
}

/// 4 bytes are IPv4, 16 IPv6; anything else is not an address.
fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(b) = <[u8; 4]>::try_from(bytes) {
        return Some(Ipv4Addr::from(b).into());
    }
    <[u8; 16]>::try_from(bytes)
        .ok()
        .map(|b| Ipv6Addr::from(b).into())
}

/// The proto field an identity error is about.
fn identity_field<'a>(e: &IdentityError, default: &'a str) -> &'a str {
    match e {
        IdentityError::Empty { part, .. } | IdentityError::BadCharacter { part, .. } => match *part
        {
            "trust domain" => "trust_domain",
            "namespace" => "namespace",
            "service account" => "service_account",
            _ => default,
        },
        _ => default,
    }
}

fn non_empty(value: &str, default: &str) -> String {
    if value.is_empty() { default } else { value }.to_string()
}

impl TryFrom<&xwl::Workload> for Workload {
    type Error = XdsError;

    fn try_from(w: &xwl::Workload) -> Result<Self, XdsError> {
        let key = if w.uid.is_empty() {
            format!("<no uid> ({}/{})", w.namespace, w.name)
        } else {
            w.uid.clone()
        };
        let cx = Ctx::new("workload", key);
        cx.required("uid", &w.uid)?;
        cx.required("namespace", &w.namespace)?;
        let ips = w
            .addresses
            .iter()
            .enumerate()
            .map(|(i, a)| cx.ip(format!("addresses[{i}]"), a))
            .collect::<Result<Vec<_>, _>>()?;
        if ips.is_empty() && w.hostname.is_empty() {
            return Err(cx.field("addresses", "needs at least one address, or a hostname"));
        }
        let protocol = match cx.known("tunnel_protocol", w.tunnel_protocol)? {
            xwl::TunnelProtocol::None => Protocol::Tcp,
            xwl::TunnelProtocol::Hbone => Protocol::Hbone,
            xwl::TunnelProtocol::LegacyIstioMtls => {
                return Err(cx.field(
                    "tunnel_protocol",
                    "LEGACY_ISTIO_MTLS is not supported; peers are reached over HBONE or plain TCP",
                ));
            }
        };
        let trust_domain = non_empty(&w.trust_domain, DEFAULT_TRUST_DOMAIN);
        let service_account = non_empty(&w.service_account, DEFAULT_SERVICE_ACCOUNT);
        cx.identity(
            SpiffeId::new(&trust_domain, &w.namespace, &service_account),
            "service_account",
        )?;
        let healthy = match cx.known("status", w.status)? {
            xwl::WorkloadStatus::Healthy => true,
            xwl::WorkloadStatus::Unhealthy => false,
        };
        let _: xwl::NetworkMode = cx.known("network_mode", w.network_mode)?;
        let _: xwl::WorkloadType = cx.known("workload_type", w.workload_type)?;
        if let Some(t) = &w.application_tunnel {
            let _: xwl::application_tunnel::Protocol =
                cx.known("application_tunnel.protocol", t.protocol)?;
            cx.port("application_tunnel.port", t.port)?;
        }
        let waypoint = w
            .waypoint
            .as_ref()
            .map(|g| cx.gateway("waypoint", g))
            .transpose()?;
        if let Some(g) = &w.network_gateway {
            cx.gateway("network_gateway", g)?;
        }
        // Sorted, so the same bad resource always gives the same NACK.
        let mut entries: Vec<(&String, &xwl::PortList)> = w.services.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        let mut services = HashMap::with_capacity(entries.len());
        for (key, list) in entries {
            let at = format!("services[{key:?}]");
            match key.split_once('/') {
                Some((ns, host)) if !ns.is_empty() && !host.is_empty() => {}
                _ => return Err(cx.field(at, "key is not \"<namespace>/<hostname>\"")),
            }
            services.insert(key.clone(), cx.ports(&format!("{at}.ports"), &list.ports)?);
        }
        let locality = w
            .locality
            .as_ref()
            .map(|l| Locality {
                region: l.region.clone(),
                zone: l.zone.clone(),
                subzone: l.subzone.clone(),
            })
            .unwrap_or_default();
        Ok(Workload {
            uid: w.uid.clone(),
            name: w.name.clone(),
            namespace: w.namespace.clone(),
            service_account,
            trust_domain,
            ips,
            protocol,
            healthy,
            node: w.node.clone(),
            workload_name: w.workload_name.clone(),
            canonical_name: w.canonical_name.clone(),
            canonical_revision: w.canonical_revision.clone(),
            cluster_id: w.cluster_id.clone(),
            locality,
            services,
            authorization_policies: w.authorization_policies.clone(),
            waypoint,
        })
    }
}

impl TryFrom<&xwl::Service> for Service {
    type Error = XdsError;

    fn try_from(s: &xwl::Service) -> Result<Self, XdsError> {
        let cx = Ctx::new("service", format!("{}/{}", s.namespace, s.hostname));
        cx.required("namespace", &s.namespace)?;
        cx.required("hostname", &s.hostname)?;
        let mut vips = Vec::with_capacity(s.addresses.len());
        for (i, a) in s.addresses.iter().enumerate() {
            let ip = cx.ip(format!("addresses[{i}].address"), &a.address)?;
            let width = if ip.is_ipv4() { 32 } else { 128 };
            match a.length {
                None => {}
                Some(len) if len == width => {}
                Some(len) if len > width => {
                    return Err(cx.field(
                        format!("addresses[{i}].length"),
                        format!("prefix length {len} is longer than the address ({width} bits)"),
                    ));
                }
                Some(len) => {
                    // A CIDR VIP: the domain only indexes single VIPs (local.rs ignores
                    // `cidrVips` too), so it is accepted and not indexed.
                    tracing::debug!(service = %cx.resource, vip = %ip, len, "CIDR VIP not indexed");
                    continue;
                }
            }
            vips.push((a.network.clone(), ip));
        }
        let ports = cx.ports("ports", &s.ports)?;
        let subject_alt_names = s
            .subject_alt_names
            .iter()
            .enumerate()
            .map(|(i, san)| {
                san.parse::<SpiffeId>()
                    .map_err(|source| XdsError::Identity {
                        resource: cx.resource.clone(),
                        field: format!("subject_alt_names[{i}]"),
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let waypoint = s
            .waypoint
            .as_ref()
            .map(|g| cx.gateway("waypoint", g))
            .transpose()?;
        for (i, w) in s.weighted_waypoints.iter().enumerate() {
            let at = format!("weighted_waypoints[{i}].destination");
            match &w.destination {
                // Validated only: the primary `waypoint` is the one used (rule 5).
                Some(g) => {
                    cx.gateway(&at, g)?;
                }
                None => return Err(cx.field(at, "required")),
            }
        }
        if let Some(lb) = &s.load_balancing {
            for (i, scope) in lb.routing_preference.iter().enumerate() {
                let _: xwl::load_balancing::Scope =
                    cx.known(format!("load_balancing.routing_preference[{i}]"), *scope)?;
            }
            let _: xwl::load_balancing::Mode = cx.known("load_balancing.mode", lb.mode)?;
            let _: xwl::load_balancing::HealthPolicy =
                cx.known("load_balancing.health_policy", lb.health_policy)?;
        }
        let _: xwl::IpFamilies = cx.known("ip_families", s.ip_families)?;
        let _: xwl::service::Visibility = cx.known("visibility", s.visibility)?;
        Ok(Service {
            name: s.name.clone(),
            namespace: s.namespace.clone(),
            hostname: s.hostname.clone(),
            vips,
            ports,
            subject_alt_names,
            waypoint,
        })
    }
}

/// An `Authorization` resource as a policy. Unlike Istio's ztunnel, which drops string matches
/// without a type and addresses it cannot read (silently widening or narrowing the policy), any
/// such value rejects the whole policy.
pub fn policy_from_proto(a: &xsec::Authorization) -> Result<authz::Policy, XdsError> {
    let cx = Ctx::new("policy", format!("{}/{}", a.namespace, a.name));
    cx.required("name", &a.name)?;
    cx.required("namespace", &a.namespace)?;
    let scope = match cx.known("scope", a.scope)? {
        xsec::Scope::Global => authz::Scope::Global,
        xsec::Scope::Namespace => authz::Scope::Namespace,
        xsec::Scope::WorkloadSelector => authz::Scope::WorkloadSelector,
    };
    let action = match cx.known("action", a.action)? {
        xsec::Action::Allow => authz::Action::Allow,
        xsec::Action::Deny => authz::Action::Deny,
    };
    if !a.extensions.is_empty() {
        tracing::debug!(policy = %cx.resource, "policy extensions ignored");
    }
    let mut rules = Vec::with_capacity(a.rules.len());
    for (ri, rule) in a.rules.iter().enumerate() {
        let mut clauses = Vec::with_capacity(rule.clauses.len());
        for (ci, clause) in rule.clauses.iter().enumerate() {
            let matches = clause
                .matches
                .iter()
                .enumerate()
                .map(|(mi, m)| {
                    match_from_proto(&cx, &format!("rules[{ri}].clauses[{ci}].matches[{mi}]"), m)
                })
                .collect::<Result<Vec<_>, _>>()?;
            clauses.push(authz::Clause { matches });
        }
        rules.push(authz::Rule { clauses });
    }
    Ok(authz::Policy {
        name: a.name.clone(),
        namespace: a.namespace.clone(),
        scope,
        action,
        dry_run: a.dry_run,
        rules,
    })
}

fn match_from_proto(cx: &Ctx, at: &str, m: &xsec::Match) -> Result<authz::Match, XdsError> {
    use xsec::string_match::MatchType;
    let strings = |vals: &[xsec::StringMatch], key: &str| {
        vals.iter()
            .enumerate()
            .map(|(i, v)| match &v.match_type {
                Some(MatchType::Exact(s)) => Ok(authz::StringMatch::Exact(s.clone())),
                Some(MatchType::Prefix(s)) => Ok(authz::StringMatch::Prefix(s.clone())),
                Some(MatchType::Suffix(s)) => Ok(authz::StringMatch::Suffix(s.clone())),
                Some(MatchType::Presence(())) => Ok(authz::StringMatch::Presence),
                None => Err(cx.field(
                    format!("{at}.{key}[{i}]"),
                    "no match_type (exact, prefix, suffix or presence)",
                )),
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let nets = |vals: &[xsec::Address], key: &str| {
        vals.iter()
            .enumerate()
            .map(|(i, v)| cidr(cx, &format!("{at}.{key}[{i}]"), v))
            .collect::<Result<Vec<_>, _>>()
    };
    let ports = |vals: &[u32], key: &str| {
        vals.iter()
            .enumerate()
            .map(|(i, p)| cx.port(format!("{at}.{key}[{i}]"), *p))
            .collect::<Result<Vec<_>, _>>()
    };
    let accounts = |vals: &[xsec::ServiceAccountMatch], key: &str| {
        vals.iter()
            .enumerate()
            .map(|(i, v)| {
                cx.required(&format!("{at}.{key}[{i}].namespace"), &v.namespace)?;
                cx.required(
                    &format!("{at}.{key}[{i}].serviceAccount"),
                    &v.service_account,
                )?;
                Ok(authz::ServiceAccountMatch {
                    namespace: v.namespace.clone(),
                    service_account: v.service_account.clone(),
                })
            })
            .collect::<Result<Vec<_>, XdsError>>()
    };
    if !m.extensions.is_empty() {
        tracing::debug!(policy = %cx.resource, at, "match extensions ignored");
    }
    Ok(authz::Match {
        namespaces: strings(&m.namespaces, "namespaces")?,
        not_namespaces: strings(&m.not_namespaces, "not_namespaces")?,
        principals: strings(&m.principals, "principals")?,
        not_principals: strings(&m.not_principals, "not_principals")?,
        source_ips: nets(&m.source_ips, "source_ips")?,
        not_source_ips: nets(&m.not_source_ips, "not_source_ips")?,
        destination_ips: nets(&m.destination_ips, "destination_ips")?,
        not_destination_ips: nets(&m.not_destination_ips, "not_destination_ips")?,
        destination_ports: ports(&m.destination_ports, "destination_ports")?,
        not_destination_ports: ports(&m.not_destination_ports, "not_destination_ports")?,
        service_accounts: accounts(&m.service_accounts, "service_accounts")?,
        not_service_accounts: accounts(&m.not_service_accounts, "not_service_accounts")?,
    })
}

/// `address`/`length` as a network. Generic over the result so the authz model's CIDR type is
/// inferred (ipnet is not a dependency of this crate); the string form is always parseable
/// once the address and length are checked.
fn cidr<N: std::str::FromStr>(cx: &Ctx, field: &str, a: &xsec::Address) -> Result<N, XdsError> {
    let ip = cx.ip(format!("{field}.address"), &a.address)?;
    let width = if ip.is_ipv4() { 32 } else { 128 };
    if a.length > width {
        return Err(cx.field(
            format!("{field}.length"),
            format!(
                "prefix length {} is longer than the address ({width} bits)",
                a.length
            ),
        ));
    }
    format!("{ip}/{}", a.length)
        .parse()
        .map_err(|_| cx.field(field, format!("{ip}/{} is not a CIDR", a.length)))
}

/// The resources istiod has sent and this ztunnel accepted, keyed by xDS resource name.
#[derive(Debug, Default)]
pub struct XdsState {
    /// uid -> workload.
    workloads: HashMap<String, Workload>,
    /// `namespace/hostname` -> service.
    services: HashMap<String, Service>,
    /// `namespace/name` -> policy.
    policies: HashMap<String, authz::Policy>,
}

impl XdsState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one `istio.workload.Address` delta: removals first, then upserts, each resource
    /// on its own. Returns the rejected upserts (for the NACK); those leave any earlier
    /// version in place. A removed name may be a workload or a service; unknown names are fine.
    pub fn apply_addresses(
        &mut self,
        upserts: &[(String, xwl::Address)],
        removed: &[String],
    ) -> Vec<(String, XdsError)> {
        for name in removed {
            self.workloads.remove(name);
            self.services.remove(name);
        }
        let mut rejected = Vec::new();
        for (name, address) in upserts {
            if let Err(e) = self.upsert_address(name, address) {
                tracing::warn!(resource = %name, error = %e, "rejected xDS Address");
                rejected.push((name.clone(), e));
            }
        }
        rejected
    }

    fn upsert_address(&mut self, name: &str, address: &xwl::Address) -> Result<(), XdsError> {
        match &address.r#type {
            Some(xwl::address::Type::Workload(w)) => {
                let w = Workload::try_from(w)?;
                check_name(name, &w.uid)?;
                self.services.remove(name);
                self.workloads.insert(name.to_string(), w);
            }
            Some(xwl::address::Type::Service(s)) => {
                let s = Service::try_from(s)?;
                check_name(name, &s.key())?;
                self.workloads.remove(name);
                self.services.insert(name.to_string(), s);
            }
            None => {
                return Err(XdsError::Field {
                    resource: format!("address {name}"),
                    field: "type".into(),
                    reason: "neither a workload nor a service".into(),
                });
            }
        }
        Ok(())
    }

    /// Applies one `istio.security.Authorization` delta, as [`XdsState::apply_addresses`] does.
    pub fn apply_authorizations(
        &mut self,
        upserts: &[(String, xsec::Authorization)],
        removed: &[String],
    ) -> Vec<(String, XdsError)> {
        for name in removed {
            self.policies.remove(name);
        }
        let mut rejected = Vec::new();
        for (name, resource) in upserts {
            let applied = policy_from_proto(resource).and_then(|p| {
                check_name(name, &p.key())?;
                Ok(p)
            });
            match applied {
                Ok(p) => {
                    self.policies.insert(name.clone(), p);
                }
                Err(e) => {
                    tracing::warn!(resource = %name, error = %e, "rejected xDS Authorization");
                    rejected.push((name.clone(), e));
                }
            }
        }
        rejected
    }

    /// A snapshot of everything held, built in key order so equal stores give equal states.
    pub fn to_state(&self) -> State {
        let mut workloads: Vec<&Workload> = self.workloads.values().collect();
        workloads.sort_by(|a, b| a.uid.cmp(&b.uid));
        let mut services: Vec<(&String, &Service)> = self.services.iter().collect();
        services.sort_by(|a, b| a.0.cmp(b.0));
        let mut policies: Vec<(&String, &authz::Policy)> = self.policies.iter().collect();
        policies.sort_by(|a, b| a.0.cmp(b.0));
        State::new(
            workloads.into_iter().cloned().collect(),
            services.into_iter().map(|(_, s)| s.clone()).collect(),
            policies.into_iter().map(|(_, p)| p.clone()).collect(),
        )
    }

    pub fn workload(&self, uid: &str) -> Option<&Workload> {
        self.workloads.get(uid)
    }

    pub fn service(&self, key: &str) -> Option<&Service> {
        self.services.get(key)
    }

    pub fn policy(&self, key: &str) -> Option<&authz::Policy> {
        self.policies.get(key)
    }

    /// (workloads, services, policies) held.
    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.workloads.len(),
            self.services.len(),
            self.policies.len(),
        )
    }
}

fn check_name(name: &str, key: &str) -> Result<(), XdsError> {
    if name != key {
        return Err(XdsError::Name {
            name: name.to_string(),
            key: key.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
