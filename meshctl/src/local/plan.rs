//! What a local cluster is made of, decided from the manifests alone (no IO).
//!
//! Rules:
//! 1. Nodes are the `spec.nodeName`s the pods name, in name order; node `i` (from 0) gets
//!    underlay address `172.30.0.<i+1>`; the underlay switch (and `meshd`) is `172.30.0.254`.
//! 2. Every pod with a node and an IPv4 address gets a namespace behind a veth to its node.
//!    Pods without either are reported and skipped (they have no network to make).
//! 3. Names: the switch `<name>.sw`, node `<name>.<node>`, pod `<name>.<node>.<ns>.<pod>`
//!    (so a node's pods share a prefix, which its agent searches), veths `p<hash of the pod>`
//!    on the node side (stable as pods come and go) and `n<i>` on the switch side (interface
//!    names are at most 15 bytes).
//! 4. A pod runs its first container's `command` + `args` when the command names a program
//!    found on this machine; otherwise it runs nothing (its namespace still exists).
//! 5. A pod labeled `gateway.networking.k8s.io/gateway-name` is a waypoint's (as istiod
//!    deploys them): it runs the `waypoint` binary instead, as its service account.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use kube_source::{Object, Pod};

pub const UNDERLAY_PREFIX: &str = "172.30.0";
pub const SWITCH_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 254);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub nodes: Vec<NodePlan>,
    /// Pods that cannot be made, with why.
    pub skipped: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlan {
    pub name: String,
    pub netns: String,
    pub underlay_ip: Ipv4Addr,
    /// The switch-side veth.
    pub uplink: String,
    pub pods: Vec<PodPlan>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPlan {
    /// `<namespace>/<name>`.
    pub key: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    /// The node-side veth.
    pub veth: String,
    /// First container's command and args, when they are to be run.
    pub command: Vec<String>,
    /// Rule 5: `(namespace, service account, pod name)` of a waypoint pod.
    pub waypoint: Option<(String, String, String)>,
}

/// The label istiod puts on a waypoint's pods, naming its Gateway.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

impl Plan {
    /// Rules 1-4 over the objects read; `runnable` says whether a program exists here.
    pub fn new(name: &str, objects: &[Object], runnable: impl Fn(&str) -> bool) -> Plan {
        let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
        let mut skipped = Vec::new();
        for o in objects {
            let Object::Pod(p) = o else { continue };
            let key = format!("{}/{}", p.metadata.namespace, p.metadata.name);
            if p.spec.node_name.is_empty() {
                skipped.push((key, "no spec.nodeName".to_string()));
            } else if ipv4(p).is_none() {
                skipped.push((key, "no IPv4 address in status.podIPs".to_string()));
            } else {
                by_node.entry(p.spec.node_name.clone()).or_default().push(p);
            }
        }
        let nodes = by_node
            .into_iter()
            .enumerate()
            .map(|(i, (node, pods))| {
                let netns = format!("{name}.{node}");
                let pods = pods
                    .into_iter()
                    .filter_map(|p| {
                        let m = &p.metadata;
                        let command = p
                            .spec
                            .containers
                            .first()
                            .filter(|c| c.command.first().is_some_and(|cmd| runnable(cmd)))
                            .map(|c| c.command.iter().chain(&c.args).cloned().collect())
                            .unwrap_or_default();
                        Some(PodPlan {
                            key: format!("{}/{}", m.namespace, m.name),
                            netns: format!("{netns}.{}.{}", m.namespace, m.name),
                            ip: ipv4(p)?,
                            veth: veth_name(&m.namespace, &m.name),
                            command,
                            waypoint: m.labels.contains_key(GATEWAY_NAME_LABEL).then(|| {
                                (
                                    m.namespace.clone(),
                                    p.service_account().to_string(),
                                    m.name.clone(),
                                )
                            }),
                        })
                    })
                    .collect();
                NodePlan {
                    name: node,
                    netns,
                    underlay_ip: format!("{UNDERLAY_PREFIX}.{}", i + 1)
                        .parse()
                        .unwrap_or(Ipv4Addr::UNSPECIFIED),
                    uplink: format!("n{i}"),
                    pods,
                }
            })
            .collect();
        Plan {
            name: name.to_string(),
            nodes,
            skipped,
        }
    }

    pub fn switch_netns(&self) -> String {
        format!("{}.sw", self.name)
    }

    pub fn pod(&self, key: &str) -> Option<(&NodePlan, &PodPlan)> {
        self.nodes
            .iter()
            .find_map(|n| n.pods.iter().find(|p| p.key == key).map(|p| (n, p)))
    }
}

/// `p` and 8 hex digits of a hash of the pod's key (FNV-1a: stable across runs).
fn veth_name(namespace: &str, name: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in namespace.bytes().chain([b'/']).chain(name.bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("p{h:08x}")
}

fn ipv4(p: &Pod) -> Option<Ipv4Addr> {
    p.status.pod_ips.iter().find_map(|i| i.ip.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_source::{Parsed, parse_yaml_document};

    fn pod(ns: &str, name: &str, node: &str, ip: &str, command: &str) -> Object {
        let node = if node.is_empty() {
            String::new()
        } else {
            format!("  nodeName: {node}\n")
        };
        let ip = if ip.is_empty() {
            String::new()
        } else {
            format!("status:\n  podIPs:\n  - ip: {ip}\n")
        };
        let doc = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{node}  containers:\n  - name: app\n    command: [{command}]\n    args: [--listen, 0.0.0.0:80]\n{ip}"
        );
        match parse_yaml_document(&doc).remove(0) {
            Ok(Parsed::Object(o)) => o,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nodes_pods_names_and_commands() {
        let objects = vec![
            pod("demo", "web", "node-b", "10.244.1.2", "meshapp"),
            pod("demo", "db", "node-a", "10.244.0.2", "/no/such/program"),
            pod("demo", "cache", "node-b", "10.244.1.3", "meshapp"),
            pod("demo", "pending", "", "10.244.9.9", "meshapp"),
            pod("demo", "noip", "node-a", "", "meshapp"),
            pod("demo", "v6only", "node-a", "fd00::1", "meshapp"),
        ];
        let plan = Plan::new("mesh", &objects, |cmd| cmd == "meshapp");
        let nodes: Vec<_> = plan
            .nodes
            .iter()
            .map(|n| {
                (
                    n.name.as_str(),
                    n.netns.as_str(),
                    n.underlay_ip.to_string(),
                    n.uplink.as_str(),
                )
            })
            .collect();
        assert_eq!(
            nodes,
            [
                ("node-a", "mesh.node-a", "172.30.0.1".to_string(), "n0"),
                ("node-b", "mesh.node-b", "172.30.0.2".to_string(), "n1"),
            ]
        );
        let (node, web) = plan.pod("demo/web").unwrap();
        assert_eq!(node.name, "node-b");
        assert_eq!(web.netns, "mesh.node-b.demo.web");
        assert_eq!(web.veth, veth_name("demo", "web"));
        assert_eq!(web.veth.len(), 9);
        assert_eq!(web.command, ["meshapp", "--listen", "0.0.0.0:80"]);
        let (_, db) = plan.pod("demo/db").unwrap();
        assert!(db.command.is_empty(), "a program not found here is not run");
        assert_ne!(plan.pod("demo/cache").unwrap().1.veth, web.veth);
        let skipped: Vec<&str> = plan.skipped.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(skipped, ["demo/pending", "demo/noip", "demo/v6only"]);
        assert_eq!(plan.switch_netns(), "mesh.sw");
    }
}
