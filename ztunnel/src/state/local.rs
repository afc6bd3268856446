//! The local config file (`LOCAL_XDS_PATH`) in Istio ztunnel's format: `workloads`,
//! `services`, `policies`, camelCase keys, unknown keys rejected (protocol.md section 6).
//!
//! Two steps: serde checks the shape (its errors carry the YAML path and line), then
//! [`LocalConfig::into_state`] checks meaning (IPs, identities), naming the entry and field.
//!
//! A `waypoint` (workloads and services) and a workload's `networkGateway` are written as
//! Istio's ztunnel writes a `GatewayAddress`: `{destination: "<network>/<IP>", hboneMtlsPort:
//! 15008}` or `{destination: "<namespace>/<hostname>", ...}`; a destination whose second part
//! is an IP is an address, as in Istio. `hboneMtlsPort` may be left out (15008). Network
//! gateways are checked and not kept (see `xds.rs`, rule 6).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use hbone::{DEFAULT_SERVICE_ACCOUNT, DEFAULT_TRUST_DOMAIN, SpiffeId};
use serde::Deserialize;

use super::{GatewayDestination, GatewayRef, Locality, Protocol, Service, State, Workload};

#[derive(Debug, thiserror::Error)]
pub enum LocalConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Yaml {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("{path}: {entry}: field {field}: {reason}")]
    Field {
        path: PathBuf,
        entry: String,
        field: String,
        reason: String,
    },
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalConfig {
    #[serde(default)]
    pub workloads: Vec<LocalWorkload>,
    #[serde(default)]
    pub services: Vec<LocalService>,
    /// Authorization policies (Istio's `Authorization` resources).
    #[serde(default)]
    pub policies: Vec<authz::LocalPolicy>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum LocalProtocol {
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "HBONE")]
    Hbone,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum LocalStatus {
    #[default]
    Healthy,
    Unhealthy,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum LocalNetworkMode {
    #[default]
    Standard,
    HostNetwork,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalWorkload {
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub name: String,
    pub namespace: String,
    pub workload_ips: Vec<String>,
    #[serde(default)]
    pub protocol: LocalProtocol,
    #[serde(default)]
    pub network_mode: LocalNetworkMode,
    #[serde(default)]
    pub trust_domain: String,
    #[serde(default)]
    pub service_account: String,
    #[serde(default)]
    pub network: String,
    #[serde(default)]
    pub workload_name: String,
    #[serde(default)]
    pub workload_type: String,
    #[serde(default)]
    pub canonical_name: String,
    #[serde(default)]
    pub canonical_revision: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub native_tunnel: bool,
    #[serde(default)]
    pub application_tunnel: Option<serde_yaml::Value>,
    #[serde(default)]
    pub authorization_policies: Vec<String>,
    #[serde(default)]
    pub status: LocalStatus,
    #[serde(default)]
    pub cluster_id: String,
    #[serde(default)]
    pub locality: Option<LocalLocality>,
    #[serde(default)]
    pub capacity: Option<u32>,
    #[serde(default)]
    pub waypoint: Option<LocalGateway>,
    #[serde(default)]
    pub network_gateway: Option<LocalGateway>,
    /// `ns/hostname` -> service port -> target port.
    #[serde(default)]
    pub services: HashMap<String, HashMap<u16, u16>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalLocality {
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub zone: String,
    #[serde(default)]
    pub subzone: String,
}

/// Istio's `GatewayAddress` in the local config (see the module docs).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalGateway {
    /// `<network>/<IP>` or `<namespace>/<hostname>`.
    pub destination: String,
    /// 0 or absent: 15008.
    #[serde(default)]
    pub hbone_mtls_port: u16,
}

impl LocalGateway {
    /// The gateway if one is given, or why its `destination` is not one.
    fn optional(g: &Option<LocalGateway>) -> Result<Option<GatewayRef>, String> {
        g.as_ref().map(Self::to_gateway).transpose()
    }

    /// The gateway, or why `destination` is not one.
    fn to_gateway(&self) -> Result<GatewayRef, String> {
        let d = &self.destination;
        let bad = || format!("{d:?} is not \"<network>/<IP>\" or \"<namespace>/<hostname>\"");
        let (left, right) = d.split_once('/').ok_or_else(bad)?;
        let destination = match right.parse::<IpAddr>() {
            Ok(ip) => GatewayDestination::Address {
                network: left.to_string(),
                ip,
            },
            Err(_) if !left.is_empty() && !right.is_empty() => GatewayDestination::Hostname {
                namespace: left.to_string(),
                hostname: right.to_string(),
            },
            Err(_) => return Err(bad()),
        };
        Ok(GatewayRef::new(destination, self.hbone_mtls_port))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalService {
    pub name: String,
    pub namespace: String,
    pub hostname: String,
    #[serde(default)]
    pub vips: Vec<String>,
    #[serde(default)]
    pub ports: HashMap<u16, u16>,
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    #[serde(default)]
    pub waypoint: Option<LocalGateway>,
    #[serde(default)]
    pub weighted_waypoints: Option<serde_yaml::Value>,
    #[serde(default)]
    pub load_balancer: Option<serde_yaml::Value>,
    #[serde(default)]
    pub ip_families: Option<String>,
    #[serde(default)]
    pub canonical: bool,
    #[serde(default)]
    pub visibility: Option<String>,
    #[serde(default)]
    pub cidr_vips: Vec<String>,
}

impl LocalConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<State, LocalConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| LocalConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Checks config text; `path` is only used to name the source in errors.
    pub fn parse(path: &Path, text: &str) -> Result<State, LocalConfigError> {
        let config: LocalConfig =
            serde_yaml::from_str(text).map_err(|source| LocalConfigError::Yaml {
                path: path.to_path_buf(),
                source,
            })?;
        config.into_state(path)
    }

    pub fn into_state(self, path: &Path) -> Result<State, LocalConfigError> {
        let err = |entry: String, field: &str, reason: String| LocalConfigError::Field {
            path: path.to_path_buf(),
            entry,
            field: field.to_string(),
            reason,
        };
        let mut policies = authz::PolicyStore::new();
        for (i, p) in self.policies.into_iter().enumerate() {
            let entry = format!("policies[{i}] ({}/{})", p.namespace, p.name);
            let policy = authz::Policy::try_from(p).map_err(|e| match e {
                authz::PolicyError::Invalid { field, reason, .. } => {
                    err(entry.clone(), &field, reason)
                }
                authz::PolicyError::Syntax(reason) => err(entry.clone(), "policies", reason),
            })?;
            if policies.insert(policy) {
                return Err(err(
                    entry,
                    "name",
                    "another policy has the same namespace/name".into(),
                ));
            }
        }
        let mut workloads = Vec::with_capacity(self.workloads.len());
        for (i, w) in self.workloads.into_iter().enumerate() {
            let entry = format!("workloads[{i}] ({}/{})", w.namespace, w.name);
            if w.namespace.is_empty() {
                return Err(err(entry, "namespace", "must not be empty".into()));
            }
            if w.workload_ips.is_empty() && w.hostname.is_empty() {
                return Err(err(entry, "workloadIps", "needs at least one IP".into()));
            }
            let mut ips = Vec::with_capacity(w.workload_ips.len());
            for (j, ip) in w.workload_ips.iter().enumerate() {
                let ip = ip.parse::<IpAddr>().map_err(|e| {
                    err(
                        entry.clone(),
                        &format!("workloadIps[{j}]"),
                        format!("{ip:?}: {e}"),
                    )
                })?;
                ips.push(ip);
            }
            let trust_domain = non_empty(w.trust_domain, DEFAULT_TRUST_DOMAIN);
            let service_account = non_empty(w.service_account, DEFAULT_SERVICE_ACCOUNT);
            SpiffeId::new(&trust_domain, &w.namespace, &service_account)
                .map_err(|e| err(entry.clone(), "serviceAccount", e.to_string()))?;
            for key in w.services.keys() {
                if !key.contains('/') {
                    return Err(err(
                        entry,
                        "services",
                        format!("key {key:?} is not \"<namespace>/<hostname>\""),
                    ));
                }
            }
            let waypoint = LocalGateway::optional(&w.waypoint)
                .map_err(|reason| err(entry.clone(), "waypoint.destination", reason))?;
            LocalGateway::optional(&w.network_gateway)
                .map_err(|reason| err(entry.clone(), "networkGateway.destination", reason))?;
            let uid = if w.uid.is_empty() {
                format!("{}/{}", w.namespace, w.name)
            } else {
                w.uid
            };
            workloads.push(Workload {
                uid,
                name: w.name,
                namespace: w.namespace,
                service_account,
                trust_domain,
                ips,
                protocol: match w.protocol {
                    LocalProtocol::Tcp => Protocol::Tcp,
                    LocalProtocol::Hbone => Protocol::Hbone,
                },
                healthy: w.status == LocalStatus::Healthy,
                node: w.node,
                workload_name: w.workload_name,
                canonical_name: w.canonical_name,
                canonical_revision: w.canonical_revision,
                cluster_id: w.cluster_id,
                locality: w
                    .locality
                    .map(|l| Locality {
                        region: l.region,
                        zone: l.zone,
                        subzone: l.subzone,
                    })
                    .unwrap_or_default(),
                services: w.services,
                authorization_policies: w.authorization_policies,
                waypoint,
            });
        }
        let mut services = Vec::with_capacity(self.services.len());
        for (i, s) in self.services.into_iter().enumerate() {
            let entry = format!("services[{i}] ({}/{})", s.namespace, s.hostname);
            let mut vips = Vec::with_capacity(s.vips.len());
            for (j, vip) in s.vips.iter().enumerate() {
                let field = format!("vips[{j}]");
                let (network, ip) = vip.split_once('/').ok_or_else(|| {
                    err(
                        entry.clone(),
                        &field,
                        format!("{vip:?} is not \"<network>/<IP>\""),
                    )
                })?;
                let ip = ip
                    .parse::<IpAddr>()
                    .map_err(|e| err(entry.clone(), &field, format!("{vip:?}: {e}")))?;
                vips.push((network.to_string(), ip));
            }
            let mut sans = Vec::with_capacity(s.subject_alt_names.len());
            for (j, san) in s.subject_alt_names.iter().enumerate() {
                let id = san.parse::<SpiffeId>().map_err(|e| {
                    err(
                        entry.clone(),
                        &format!("subjectAltNames[{j}]"),
                        e.to_string(),
                    )
                })?;
                sans.push(id);
            }
            let waypoint = LocalGateway::optional(&s.waypoint)
                .map_err(|reason| err(entry.clone(), "waypoint.destination", reason))?;
            services.push(Service {
                name: s.name,
                namespace: s.namespace,
                hostname: s.hostname,
                vips,
                ports: s.ports,
                subject_alt_names: sans,
                waypoint,
            });
        }
        Ok(State::new(workloads, services, policies))
    }
}

fn non_empty(value: String, default: &str) -> String {
    if value.is_empty() {
        default.to_string()
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISTIO_EXAMPLE: &str = r#"
workloads:
- uid: demo//Pod/shop/cart-0
  name: cart-0
  namespace: shop
  serviceAccount: cart
  workloadIps: ["10.1.0.11"]
  protocol: HBONE
  node: node-a
  network: ""
  canonicalName: cart
  canonicalRevision: v1
  services:
    "shop/cart.shop.svc.cluster.local":
      8080: 9090
- uid: demo//Pod/shop/legacy-0
  name: legacy-0
  namespace: shop
  workloadIps: ["10.1.0.12"]
  protocol: TCP
  node: node-b
services:
- name: cart
  namespace: shop
  hostname: cart.shop.svc.cluster.local
  vips: ["/10.96.0.20"]
  ports:
    8080: 9090
- name: cart-remote
  namespace: shop
  hostname: cart.remote.example
  vips:
    - west/10.96.7.7
  ports:
    80: 8080
  subjectAltNames:
    - spiffe://cluster.local/ns/shop/sa/cart
policies:
- name: cart-from-frontend
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - principals:
        - !Exact cluster.local/ns/shop/sa/frontend
- action: Deny
  rules:
  - - - destinationPorts:
        - 9999
  name: deny-9999
  namespace: shop
  scope: Namespace
"#;

    fn parse(text: &str) -> Result<State, LocalConfigError> {
        LocalConfig::parse(Path::new("test.yaml"), text)
    }

    #[test]
    fn reads_istio_example() {
        let state = parse(ISTIO_EXAMPLE).unwrap();
        let cart = state.workload_by_ip("10.1.0.11".parse().unwrap()).unwrap();
        assert_eq!(cart.protocol, Protocol::Hbone);
        assert_eq!(
            cart.identity().unwrap().to_string(),
            "spiffe://cluster.local/ns/shop/sa/cart"
        );
        let legacy = state.workload_by_name("shop", "legacy-0").unwrap();
        assert_eq!(legacy.protocol, Protocol::Tcp);
        assert_eq!(legacy.service_account, "default");
        let svc = state.service_by_vip("10.96.0.20".parse().unwrap()).unwrap();
        assert_eq!(svc.ports.get(&8080), Some(&9090));
        assert_eq!(state.endpoints(svc).len(), 1);
        let remote = state.service_by_vip("10.96.7.7".parse().unwrap()).unwrap();
        assert_eq!(
            remote.vips,
            vec![("west".to_string(), "10.96.7.7".parse().unwrap())]
        );
        assert_eq!(remote.subject_alt_names[0].service_account(), "cart");
    }

    #[test]
    fn errors_name_file_entry_and_field() {
        let cases = [
            (
                "workloads:\n- name: a\n  namespace: ns\n  workloadIps: [\"10.0.0.300\"]\n",
                "workloadIps[0]",
            ),
            (
                "workloads:\n- name: a\n  namespace: ns\n  workloadIps: [\"10.0.0.1\"]\n  protocl: HBONE\n",
                "protocl",
            ),
            (
                "workloads:\n- name: a\n  namespace: ns\n  workloadIps: [\"10.0.0.1\"]\n  protocol: HBON\n",
                "protocol",
            ),
            (
                "workloads:\n- name: a\n  namespace: ns\n  workloadIps: []\n",
                "workloadIps",
            ),
            (
                "workloads:\n- name: a\n  namespace: ns\n  workloadIps: [\"10.0.0.1\"]\n  serviceAccount: \"a b\"\n",
                "serviceAccount",
            ),
            (
                "services:\n- name: s\n  namespace: ns\n  hostname: s.ns\n  vips: [\"10.0.0.1\"]\n",
                "vips[0]",
            ),
            (
                "services:\n- name: s\n  namespace: ns\n  hostname: s.ns\n  ports: {99999: 80}\n",
                "ports",
            ),
            ("workload: []\n", "workload"),
            (
                "workloads:\n- name: a\n  namespace: ns\n  workloadIps: [\"10.0.0.1\"]\n  waypoint: {destination: \"waypoint.ns\"}\n",
                "workloads[0] (ns/a): field waypoint.destination: \"waypoint.ns\" is not",
            ),
            (
                "workloads:\n- name: a\n  namespace: ns\n  workloadIps: [\"10.0.0.1\"]\n  waypoint: {destination: \"ns/\"}\n",
                "field waypoint.destination",
            ),
            (
                "workloads:\n- name: a\n  namespace: ns\n  workloadIps: [\"10.0.0.1\"]\n  networkGateway: {destination: \"/\"}\n",
                "field networkGateway.destination",
            ),
            (
                "workloads:\n- name: a\n  namespace: ns\n  workloadIps: [\"10.0.0.1\"]\n  waypoint: {destination: \"ns/wp\", hboneMtlsPort: 70000}\n",
                "hboneMtlsPort",
            ),
            (
                "services:\n- name: s\n  namespace: ns\n  hostname: s.ns\n  waypoint: {destination: \"ns/wp\", port: 15008}\n",
                "port",
            ),
            (
                "services:\n- name: s\n  namespace: ns\n  hostname: s.ns\n  waypoint: {hostname: wp, namespace: ns}\n",
                "hostname",
            ),
            (
                "policies:\n- name: p\n  namespace: ns\n  action: Maybe\n  scope: Namespace\n",
                "policies[0] (ns/p): field action",
            ),
            (
                "policies:\n- name: p\n  namespace: ns\n  action: Allow\n  scope: Namespace\n  rules:\n  - - - sourceIps: [\"10.0.0.0/33\"]\n",
                "sourceIps",
            ),
            (
                "policies:\n- name: p\n  namespace: ns\n  action: Allow\n  scope: Namespace\n  rules:\n  - - - destinationPorts: [65536]\n",
                "destinationPorts",
            ),
            (
                "policies:\n- name: p\n  namespace: ns\n  action: Allow\n  scope: Namespace\n- name: p\n  namespace: ns\n  action: Deny\n  scope: Global\n",
                "policies[1] (ns/p): field name: another policy has the same namespace/name",
            ),
        ];
        for (text, field) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with("test.yaml: "), "{e}");
            assert!(e.contains(field), "{field} not in {e}");
        }
    }
}
