//! Policy evaluation cost with 1,000 policies applying to one workload.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use authz::{Connection, Peer, PolicyStore, parse_policies};
use criterion::{Criterion, criterion_group, criterion_main};

/// 1,000 Namespace-scoped policies in the workload's namespace: 500 ALLOW on principals that
/// do not match, 499 DENY on ports that do not match, and one ALLOW that matches last.
fn store() -> PolicyStore {
    let mut yaml = String::new();
    for i in 0..500 {
        yaml += &format!(
            "- name: allow-{i:04}\n  namespace: shop\n  scope: Namespace\n  action: Allow\n  rules:\n  - - - principals:\n        - !Exact cluster.local/ns/team-{i}/sa/app\n        sourceIps: [\"10.{}.0.0/16\"]\n",
            i % 250
        );
    }
    for i in 0..499 {
        yaml += &format!(
            "- name: deny-{i:04}\n  namespace: shop\n  scope: Namespace\n  action: Deny\n  rules:\n  - - - destinationPorts: [{}]\n        notNamespaces:\n        - !Prefix kube-\n",
            20000 + i
        );
    }
    yaml += "- name: zz-allow-frontend\n  namespace: shop\n  scope: Namespace\n  action: Allow\n  rules:\n  - - - principals:\n        - !Suffix /sa/frontend\n";
    parse_policies(&yaml).unwrap().into_iter().collect()
}

fn conn(sa: &str) -> Connection {
    Connection {
        src_ip: "10.9.8.7".parse().unwrap(),
        dst_ip: "10.1.2.3".parse().unwrap(),
        dst_port: 8080,
        peer: Some(Peer {
            trust_domain: "cluster.local".into(),
            namespace: "web".into(),
            service_account: sa.into(),
        }),
    }
}

fn bench(c: &mut Criterion) {
    let store = store();
    assert_eq!(store.len(), 1000);
    let keys: Vec<String> = Vec::new();
    let allowed = conn("frontend");
    let denied = conn("intruder");
    assert!(store.evaluate("shop", &keys, &allowed).allowed);
    assert!(!store.evaluate("shop", &keys, &denied).allowed);
    let mut g = c.benchmark_group("evaluate 1000 policies");
    g.bench_function("allowed by the last policy", |b| {
        b.iter(|| store.evaluate(black_box("shop"), &keys, black_box(&allowed)))
    });
    g.bench_function("denied, no ALLOW matches", |b| {
        b.iter(|| store.evaluate(black_box("shop"), &keys, black_box(&denied)))
    });
    g.bench_function("other namespace, no policies apply", |b| {
        b.iter(|| store.evaluate(black_box("other"), &keys, black_box(&allowed)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
