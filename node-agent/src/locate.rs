//! Finding a pod's network namespace: the one where the pod's IP is a local address.
//!
//! Candidates are the named namespaces (`/var/run/netns/*`, where `ip netns` and
//! `meshctl local` keep pods) and every process's (`/proc/<pid>/ns/net`, where a container
//! runtime's pods are), each namespace tried once. A namespace holds the IP when a socket
//! there can bind it. Where several isolated networks share one machine (local clusters,
//! tests), [`Scope::Named`] limits the search to the named namespaces of one of them.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};

use zds::Netns;

/// Where named namespaces live.
pub const NETNS_DIR: &str = "/var/run/netns";

/// Where to look.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Scope {
    /// Every named namespace and every process's.
    #[default]
    All,
    /// Only named namespaces whose name starts with this prefix.
    Named(String),
}

/// The namespace of each pod (`uid -> its IPs`) that can be found, in one pass over the
/// candidates: each namespace is entered once and tested for every pod's addresses. Blocking
/// (reads /proc, enters namespaces): call from a blocking task.
pub fn find_all<'a>(pods: &'a [(String, Vec<IpAddr>)], scope: &Scope) -> HashMap<&'a str, Netns> {
    let own = Netns::current().ok().map(|n| n.id().to_string());
    let mut seen: HashSet<String> = own.into_iter().collect();
    let mut found: HashMap<&str, Netns> = HashMap::new();
    for path in candidates(scope) {
        if found.len() == pods.len() {
            break;
        }
        let Ok(ns) = Netns::open(&path) else { continue };
        if !seen.insert(ns.id().to_string()) {
            continue;
        }
        let here: Vec<&str> = ns
            .run(|| {
                pods.iter()
                    .filter(|(uid, ips)| !found.contains_key(uid.as_str()) && bindable(ips))
                    .map(|(uid, _)| uid.as_str())
                    .collect()
            })
            .unwrap_or_default();
        for uid in here {
            // Two pods in one namespace (a misconfiguration, or host-network pods) each
            // get their own descriptor of it.
            if let Ok(copy) = ns.try_clone() {
                found.insert(uid, copy);
            }
        }
    }
    found
}

/// Whether one of `ips` is a local address of the calling thread's namespace.
fn bindable(ips: &[IpAddr]) -> bool {
    ips.iter()
        .any(|ip| UdpSocket::bind(SocketAddr::new(*ip, 0)).is_ok())
}

fn candidates(scope: &Scope) -> impl Iterator<Item = PathBuf> {
    let prefix = match scope {
        Scope::All => None,
        Scope::Named(p) => Some(p.clone()),
    };
    let scan_processes = prefix.is_none();
    let named = entries(Path::new(NETNS_DIR)).into_iter().filter(move |p| {
        prefix.as_deref().is_none_or(|prefix| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
    });
    let processes = entries(Path::new("/proc"))
        .into_iter()
        .filter(move |_| scan_processes)
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|p| p.join("ns").join("net"));
    named.chain(processes)
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}
