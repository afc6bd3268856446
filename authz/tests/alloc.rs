//! `PolicyStore::evaluate` over 1,000 policies, and `HttpPolicies::custom` and `decide` over
//! 300, allocate nothing unless dry-run or audit results are reported. Counted with a
//! per-thread counting allocator.
// A global allocator is an `unsafe impl`; this test binary only wraps the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use authz::http::{HttpPolicies, HttpVerdict, JwtAuth, Request};
use authz::translate::http_authorization_policy;
use authz::{
    Action, Clause, Connection, Decision, Match, Peer, Policy, PolicyStore, Rule, Scope,
    StringMatch,
};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

fn policy(name: String, namespace: &str, scope: Scope, action: Action, m: Match) -> Policy {
    Policy {
        name,
        namespace: namespace.into(),
        scope,
        action,
        dry_run: false,
        rules: vec![
            Rule {
                clauses: vec![Clause {
                    matches: vec![Match {
                        destination_ports: vec![1, 2, 3],
                        ..Default::default()
                    }],
                }],
            },
            Rule {
                clauses: vec![
                    Clause {
                        matches: vec![Match {
                            source_ips: vec!["192.168.0.0/16".parse().expect("cidr")],
                            ..Default::default()
                        }],
                    },
                    Clause { matches: vec![m] },
                ],
            },
        ],
    }
}

#[test]
fn evaluate_does_not_allocate_per_policy_or_rule() {
    let never = |i: usize| Match {
        principals: vec![
            StringMatch::Exact(format!("cluster.local/ns/web/sa/other-{i}")),
            StringMatch::Prefix(format!("cluster.local/ns/x{i}/")),
            StringMatch::Suffix(format!("/sa/y{i}")),
        ],
        not_namespaces: vec![StringMatch::Exact("web".into())],
        ..Default::default()
    };
    let mut store = PolicyStore::new();
    let mut keys = Vec::new();
    for i in 0..400 {
        store.insert(policy(
            format!("ns-allow-{i}"),
            "shop",
            Scope::Namespace,
            Action::Allow,
            never(i),
        ));
    }
    for i in 0..300 {
        store.insert(policy(
            format!("global-deny-{i}"),
            "istio-system",
            Scope::Global,
            Action::Deny,
            never(i + 1000),
        ));
    }
    for i in 0..300 {
        store.insert(policy(
            format!("sel-{i}"),
            "shop",
            Scope::WorkloadSelector,
            Action::Allow,
            never(i),
        ));
        keys.push(format!("shop/sel-{i}"));
    }
    assert_eq!(store.len(), 1000);

    let mut conn = Connection {
        src_ip: "10.0.0.5".parse().unwrap(),
        dst_ip: "10.1.0.11".parse().unwrap(),
        dst_port: 8080,
        peer: Some(Peer {
            trust_domain: "cluster.local".into(),
            namespace: "web".into(),
            service_account: "frontend".into(),
        }),
    };
    let mut verdict = None;
    let n = allocations_during(|| verdict = Some(store.evaluate("shop", &keys, &conn)));
    let verdict = verdict.unwrap();
    assert_eq!(verdict.reason, Decision::NoAllowMatched);
    assert_eq!(n, 0, "allocations while denying");

    // A match on the last selector policy: the result names it without allocating.
    conn.src_ip = "192.168.1.1".parse().unwrap();
    conn.peer.as_mut().unwrap().namespace = "x299".into();
    let mut verdict = None;
    let n = allocations_during(|| verdict = Some(store.evaluate("shop", &keys, &conn)));
    let verdict = verdict.unwrap();
    assert!(verdict.allowed, "{:?}", verdict.reason);
    assert_eq!(n, 0, "allocations while allowing");

    let start = std::time::Instant::now();
    for _ in 0..100 {
        std::hint::black_box(store.evaluate("shop", &keys, &conn));
    }
    eprintln!(
        "evaluate over 1,000 policies: {:?} per call",
        start.elapsed() / 100
    );
}

/// A waypoint's L7 policies: every field kind, none matching until the last ALLOW.
fn http_policies() -> HttpPolicies {
    let mut docs = Vec::new();
    for i in 0..150 {
        docs.push(format!(
            r#"
metadata: {{name: allow-{i:03}, namespace: shop}}
spec:
  rules:
  - from: [{{source: {{principals: ["*/ns/web/sa/other-{i}"], notNamespaces: [legacy]}}}}]
    to: [{{operation: {{hosts: ["*.shop-{i}.example.com"], paths: ["/v{i}/*"], methods: [GET]}}}}]
  - when:
    - {{key: "request.headers[x-tenant]", values: ["t-{i}"]}}
    - {{key: "request.auth.claims[realm][roles]", values: ["*role-{i}*"]}}
"#
        ));
    }
    for i in 0..149 {
        docs.push(format!(
            r#"
metadata: {{name: deny-{i:03}, namespace: istio-system}}
spec:
  action: DENY
  rules:
  - when: [{{key: "request.headers[user-agent]", values: ["*scanner-{i}*"]}}]
  - from: [{{source: {{remoteIpBlocks: ["203.0.{i}.0/24"]}}}}]
"#
        ));
    }
    docs.push(
        r#"
metadata: {name: ext, namespace: shop}
spec:
  action: CUSTOM
  provider: {name: opa}
  rules: [{to: [{operation: {paths: ["/admin/*"]}}]}]
"#
        .to_string(),
    );
    docs.push(
        r#"
metadata: {name: zz-allow-frontend, namespace: shop}
spec:
  rules:
  - from: [{source: {principals: ["*/ns/web/*"], requestPrincipals: ["*"]}}]
    to: [{operation: {hosts: ["SHOP.example.com"], paths: ["/api/*"]}}]
    when: [{key: "request.auth.claims[realm][roles]", values: ["buyer"]}]
"#
        .to_string(),
    );
    docs.iter()
        .map(|d| {
            http_authorization_policy(d.as_str(), "istio-system")
                .expect("translates")
                .policy
        })
        .collect()
}

#[test]
fn http_decide_does_not_allocate_on_the_allow_path() {
    let set = http_policies();
    assert_eq!(set.len(), 301);
    let peer = Peer {
        trust_domain: "cluster.local".into(),
        namespace: "web".into(),
        service_account: "frontend".into(),
    };
    let jwt = JwtAuth {
        principal: "https://idp.example.com/alice".into(),
        audiences: vec!["shop".into()],
        presenter: None,
        claims: serde_json::json!({"realm": {"roles": ["seller", "buyer"]}}),
    };
    let headers = [("User-Agent", "curl/8.5.0"), ("x-tenant", "acme")];
    let mut req = Request::new(
        "10.0.0.5".parse().unwrap(),
        "10.1.0.11:8080".parse().unwrap(),
        "GET",
        "shop.example.com:8080",
        "/api/orders?page=2",
    );
    req.peer = Some(&peer);
    req.jwt = Some(&jwt);
    req.headers = &headers;

    let mut outcome = None;
    let n = allocations_during(|| outcome = Some((set.custom(&req), set.decide(&req))));
    let (custom, decision) = outcome.take().unwrap();
    assert_eq!(custom, None);
    match &decision.verdict {
        HttpVerdict::Allowed { by: Some(by) } => assert_eq!(&*by.policy, "shop/zz-allow-frontend"),
        other => panic!("want allowed by shop/zz-allow-frontend, got {other:?}"),
    }
    assert_eq!(n, 0, "allocations while allowing");

    // Denied for want of a matching ALLOW: no allocation either.
    req.jwt = None;
    let n = allocations_during(|| outcome = Some((set.custom(&req), set.decide(&req))));
    assert!(!outcome.unwrap().1.is_allowed());
    assert_eq!(n, 0, "allocations while denying");

    let start = std::time::Instant::now();
    for _ in 0..100 {
        std::hint::black_box(set.decide(&req));
    }
    eprintln!(
        "HTTP decide over 301 policies: {:?} per call",
        start.elapsed() / 100
    );
}
