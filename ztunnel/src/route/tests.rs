//! The outbound decision table (`route.rs`'s rules), over one local config.

use std::path::Path;

use super::*;
use crate::state::local::LocalConfig;

const CONFIG: &str = r#"
workloads:
- name: client
  namespace: shop
  serviceAccount: client
  workloadIps: ["10.0.0.1"]
  protocol: HBONE
- name: server-0
  namespace: shop
  serviceAccount: server
  workloadIps: ["10.0.0.2"]
  protocol: HBONE
  services:
    "shop/server.shop.svc.cluster.local": {80: 8080}
- name: server-1
  namespace: shop
  serviceAccount: server
  workloadIps: ["10.0.0.3"]
  protocol: HBONE
  status: Unhealthy
  services:
    "shop/server.shop.svc.cluster.local": {80: 8080}
- name: legacy
  namespace: shop
  workloadIps: ["10.0.0.4"]
  protocol: TCP
  services:
    "shop/legacy.shop.svc.cluster.local": {}
- name: gone
  namespace: shop
  workloadIps: ["10.0.0.5"]
  protocol: HBONE
  status: Unhealthy
  services:
    "shop/dead.shop.svc.cluster.local": {}
# The waypoint: two healthy replicas and an unhealthy one behind its service.
- name: waypoint-0
  namespace: shop
  serviceAccount: waypoint
  workloadIps: ["10.0.0.10"]
  protocol: HBONE
  services:
    "shop/waypoint.shop.svc.cluster.local": {}
- name: waypoint-1
  namespace: shop
  serviceAccount: waypoint
  workloadIps: ["10.0.0.11"]
  protocol: HBONE
  services:
    "shop/waypoint.shop.svc.cluster.local": {}
- name: waypoint-2
  namespace: shop
  serviceAccount: waypoint
  workloadIps: ["10.0.0.12"]
  protocol: HBONE
  status: Unhealthy
  services:
    "shop/waypoint.shop.svc.cluster.local": {}
- name: dead-waypoint-0
  namespace: shop
  serviceAccount: waypoint
  workloadIps: ["10.0.0.13"]
  protocol: HBONE
  status: Unhealthy
  services:
    "shop/dead-waypoint.shop.svc.cluster.local": {}
# Workloads with a waypoint of their own, named every way a GatewayAddress can.
- name: cart-0
  namespace: shop
  serviceAccount: cart
  workloadIps: ["10.0.0.20", "fd00::20"]
  protocol: HBONE
  waypoint: {destination: "shop/waypoint.shop.svc.cluster.local", hboneMtlsPort: 15008}
  services:
    "shop/cart.shop.svc.cluster.local": {80: 8080}
- name: reviews-0
  namespace: shop
  serviceAccount: reviews
  workloadIps: ["10.0.0.21"]
  protocol: TCP
  waypoint: {destination: "/10.0.0.10", hboneMtlsPort: 15018}
- name: ratings-0
  namespace: shop
  serviceAccount: ratings
  workloadIps: ["10.0.0.24"]
  protocol: HBONE
  waypoint: {destination: "/10.96.0.10"}
- name: orphan-0
  namespace: shop
  workloadIps: ["10.0.0.22"]
  protocol: HBONE
  waypoint: {destination: "shop/nope.shop.svc.cluster.local"}
- name: stranded-0
  namespace: shop
  workloadIps: ["10.0.0.23"]
  protocol: HBONE
  waypoint: {destination: "shop/dead-waypoint.shop.svc.cluster.local"}
- name: elsewhere-0
  namespace: shop
  workloadIps: ["10.0.0.25"]
  protocol: HBONE
  waypoint: {destination: "other/waypoint.shop.svc.cluster.local"}
services:
- name: server
  namespace: shop
  hostname: server.shop.svc.cluster.local
  vips: ["/10.96.0.1"]
  ports: {80: 0}
  subjectAltNames: ["spiffe://cluster.local/ns/shop/sa/alt"]
- name: legacy
  namespace: shop
  hostname: legacy.shop.svc.cluster.local
  vips: ["/10.96.0.2"]
  ports: {80: 9000}
- name: dead
  namespace: shop
  hostname: dead.shop.svc.cluster.local
  vips: ["/10.96.0.3"]
  ports: {80: 80}
- name: waypoint
  namespace: shop
  hostname: waypoint.shop.svc.cluster.local
  vips: ["/10.96.0.10"]
  ports: {15008: 15008}
  subjectAltNames: ["spiffe://cluster.local/ns/shop/sa/waypoint-canary"]
- name: dead-waypoint
  namespace: shop
  hostname: dead-waypoint.shop.svc.cluster.local
  vips: ["/10.96.0.13"]
- name: cart
  namespace: shop
  hostname: cart.shop.svc.cluster.local
  vips: ["/10.96.0.20"]
  ports: {80: 8080}
# A service with a waypoint and no endpoints: none is needed, the waypoint picks.
- name: front
  namespace: shop
  hostname: front.shop.svc.cluster.local
  vips: ["/10.96.0.30", "/fd00::30"]
  ports: {80: 9080}
  waypoint: {destination: "shop/waypoint.shop.svc.cluster.local", hboneMtlsPort: 15008}
- name: lost
  namespace: shop
  hostname: lost.shop.svc.cluster.local
  vips: ["/10.96.0.31"]
  ports: {80: 9080}
  waypoint: {destination: "/10.0.0.99"}
"#;

const SERVER: &str = "spiffe://cluster.local/ns/shop/sa/server";
const ALT: &str = "spiffe://cluster.local/ns/shop/sa/alt";
const WAYPOINT: &str = "spiffe://cluster.local/ns/shop/sa/waypoint";
const CANARY: &str = "spiffe://cluster.local/ns/shop/sa/waypoint-canary";
const CART: &str = "spiffe://cluster.local/ns/shop/sa/cart";

fn state() -> State {
    LocalConfig::parse(Path::new("t.yaml"), CONFIG).unwrap()
}

/// What a route boils down to, for table comparison.
fn summary(r: Result<Route, RouteError>) -> String {
    let ids = |e: &[SpiffeId]| {
        e.iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    match r {
        Ok(Route::Hbone {
            hbone_addr,
            target,
            expected,
            ..
        }) => format!("hbone {hbone_addr} {target} {}", ids(&expected)),
        Ok(Route::Waypoint {
            hbone_addr,
            target,
            expected,
            waypoint,
            ..
        }) => format!(
            "waypoint {} {hbone_addr} {target} {}",
            waypoint.name,
            ids(&expected)
        ),
        Ok(Route::Passthrough { target, .. }) => format!("pass {target}"),
        Err(e) => format!("refuse {e}"),
    }
}

fn route_from(state: &State, source: &str, dst: &str) -> Result<Route, RouteError> {
    let source = state.workload_by_name("shop", source).unwrap();
    route(state, source, dst.parse().unwrap(), |_| 0)
}

#[test]
fn outbound_decisions() {
    let state = state();
    let refused = |w: &str, why: &str| {
        format!(
            "refuse waypoint {w}: {why} (refused: going around the waypoint would skip its policy)"
        )
    };
    let cases = [
        // Direct to an HBONE workload: port unchanged, its identity expected.
        (
            "client",
            "10.0.0.2:8080",
            format!("hbone 10.0.0.2:15008 10.0.0.2:8080 {SERVER}"),
        ),
        // Via VIP: healthy endpoint only, endpoint port map wins over service's 0, service SANs added.
        (
            "client",
            "10.96.0.1:80",
            format!("hbone 10.0.0.2:15008 10.0.0.2:8080 {SERVER},{ALT}"),
        ),
        // A VIP port the service does not list keeps its number.
        (
            "client",
            "10.96.0.1:81",
            format!("hbone 10.0.0.2:15008 10.0.0.2:81 {SERVER},{ALT}"),
        ),
        // TCP workload: plaintext passthrough, via VIP the service's target port applies.
        ("client", "10.0.0.4:5000", "pass 10.0.0.4:5000".into()),
        ("client", "10.96.0.2:80", "pass 10.0.0.4:9000".into()),
        // Unknown address: passthrough unchanged.
        ("client", "192.0.2.7:443", "pass 192.0.2.7:443".into()),
        // No healthy endpoint: refused.
        (
            "client",
            "10.96.0.3:80",
            "refuse service dead.shop.svc.cluster.local has no healthy endpoint".into(),
        ),
        // Loopback to our own ports: refused; other loopback ports pass.
        (
            "client",
            "127.0.0.1:15008",
            "refuse destination 127.0.0.1:15008 is one of ztunnel's own ports".into(),
        ),
        (
            "client",
            "127.0.0.1:15001",
            "refuse destination 127.0.0.1:15001 is one of ztunnel's own ports".into(),
        ),
        ("client", "127.0.0.1:8080", "pass 127.0.0.1:8080".into()),
        // Rule 2: a VIP whose service has a waypoint goes to a waypoint endpoint on its HBONE
        // port, `:authority` the VIP as dialled, expecting the waypoint's identity and its
        // service's SANs; the service has no endpoints and needs none.
        (
            "client",
            "10.96.0.30:80",
            format!("waypoint waypoint-0 10.0.0.10:15008 10.96.0.30:80 {WAYPOINT},{CANARY}"),
        ),
        // Rule 2 has no sandwich exception (as in Istio: a waypoint dials endpoints, not VIPs).
        (
            "waypoint-0",
            "10.96.0.30:80",
            format!("waypoint waypoint-0 10.0.0.10:15008 10.96.0.30:80 {WAYPOINT},{CANARY}"),
        ),
        // ... of the dialled family: none, refused.
        (
            "client",
            "[fd00::30]:80",
            refused(
                "shop/waypoint.shop.svc.cluster.local",
                "its workload shop/waypoint-0 has no address in the family of [fd00::30]:80",
            ),
        ),
        // A service's waypoint given by an address nothing has: refused.
        (
            "client",
            "10.96.0.31:80",
            refused(
                "/10.0.0.99",
                "no known service or workload has that name or address",
            ),
        ),
        // Rule 3: service-addressed, so the endpoint's workload waypoint is not used
        // (protocol.md 10.2, as Istio's ztunnel).
        (
            "client",
            "10.96.0.20:80",
            format!("hbone 10.0.0.20:15008 10.0.0.20:8080 {CART}"),
        ),
        // Rule 4: the pod IP dialled directly still goes through its waypoint, `:authority` the
        // pod IP and port.
        (
            "client",
            "10.0.0.20:8080",
            format!("waypoint waypoint-0 10.0.0.10:15008 10.0.0.20:8080 {WAYPOINT},{CANARY}"),
        ),
        (
            "client",
            "[fd00::20]:8080",
            refused(
                "shop/waypoint.shop.svc.cluster.local",
                "its workload shop/waypoint-0 has no address in the family of [fd00::20]:8080",
            ),
        ),
        // From the waypoint itself (sandwich), any replica, healthy or not: straight to the pod.
        (
            "waypoint-0",
            "10.0.0.20:8080",
            format!("hbone 10.0.0.20:15008 10.0.0.20:8080 {CART}"),
        ),
        (
            "waypoint-1",
            "10.0.0.20:8080",
            format!("hbone 10.0.0.20:15008 10.0.0.20:8080 {CART}"),
        ),
        (
            "waypoint-2",
            "10.0.0.20:8080",
            format!("hbone 10.0.0.20:15008 10.0.0.20:8080 {CART}"),
        ),
        // Another workload of the same identity is not the waypoint: it goes through it.
        (
            "server-0",
            "10.0.0.20:8080",
            format!("waypoint waypoint-0 10.0.0.10:15008 10.0.0.20:8080 {WAYPOINT},{CANARY}"),
        ),
        // A waypoint given by a workload's IP: that workload, on the given HBONE port, its
        // identity alone; the destination's TCP protocol does not matter.
        (
            "client",
            "10.0.0.21:9080",
            format!("waypoint waypoint-0 10.0.0.10:15018 10.0.0.21:9080 {WAYPOINT}"),
        ),
        ("waypoint-0", "10.0.0.21:9080", "pass 10.0.0.21:9080".into()),
        // A waypoint given by its service's VIP: one of its endpoints, port left out = 15008.
        (
            "client",
            "10.0.0.24:80",
            format!("waypoint waypoint-0 10.0.0.10:15008 10.0.0.24:80 {WAYPOINT},{CANARY}"),
        ),
        // A waypoint hostname nothing has (or in another namespace): refused, never bypassed.
        (
            "client",
            "10.0.0.22:80",
            refused(
                "shop/nope.shop.svc.cluster.local",
                "no known service or workload has that name or address",
            ),
        ),
        (
            "client",
            "10.0.0.25:80",
            refused(
                "other/waypoint.shop.svc.cluster.local",
                "no known service or workload has that name or address",
            ),
        ),
        // A waypoint with no healthy endpoint: refused.
        (
            "client",
            "10.0.0.23:80",
            refused(
                "shop/dead-waypoint.shop.svc.cluster.local",
                "its service dead-waypoint.shop.svc.cluster.local has no healthy endpoint",
            ),
        ),
    ];
    for (src, dst, want) in cases {
        let got = summary(route_from(&state, src, dst));
        assert_eq!(got, want, "from {src} to {dst}");
    }
}

#[test]
fn picks_among_healthy_endpoints_only() {
    let state = state();
    let client = state.workload_by_name("shop", "client").unwrap();
    let mut offered = 0;
    let r = route(&state, client, "10.96.0.1:80".parse().unwrap(), |n| {
        offered = n;
        n + 5 // out of range picks are clamped, never panic
    });
    assert_eq!(offered, 1);
    assert!(summary(r).contains("10.0.0.2:8080"));

    // A waypoint's endpoint is picked the same way, among its healthy replicas.
    let mut offered = Vec::new();
    let r = route(&state, client, "10.0.0.20:8080".parse().unwrap(), |n| {
        offered.push(n);
        1
    });
    assert_eq!(offered, [2]);
    assert!(summary(r).starts_with("waypoint waypoint-1 10.0.0.11:15008 "));
}

#[test]
fn waypoint_route_names_the_waypoint_and_what_was_addressed() {
    let state = state();
    let client = state.workload_by_name("shop", "client").unwrap();
    let Ok(Route::Waypoint {
        waypoint,
        destination,
        service,
        ..
    }) = route(&state, client, "10.96.0.30:80".parse().unwrap(), |_| 0)
    else {
        panic!("not a waypoint route");
    };
    assert_eq!(waypoint.name, "waypoint-0");
    assert!(
        destination.is_none(),
        "no endpoint of the service is chosen"
    );
    assert_eq!(service.unwrap().name, "front");

    let Ok(Route::Waypoint {
        destination,
        service,
        ..
    }) = route(&state, client, "10.0.0.20:8080".parse().unwrap(), |_| 0)
    else {
        panic!("not a waypoint route");
    };
    assert_eq!(destination.unwrap().name, "cart-0");
    assert!(service.is_none());
}
