//! Service-account waypoints (`istio.io/for-service-account` on a waypoint Gateway): which
//! pods they bind, what beats them, conflicting claims, and unbinding.

use super::*;
use crate::translate::{Scope, Translator};

const UW: &str = "istio.io/use-waypoint";
const FOR_SA: &str = "istio.io/for-service-account";

/// A waypoint Gateway for workloads (`waypoint-for: all`), claiming `account` if given.
fn account_gateway(ns: &str, name: &str, account: Option<&str>, created: &str) -> Gateway {
    let mut g = Gateway {
        metadata: meta(ns, name, &[("istio.io/waypoint-for", "all")]),
        ..Default::default()
    };
    g.spec.gateway_class_name = "istio-waypoint".into();
    g.metadata.creation_timestamp = created.into();
    if let Some(a) = account {
        g.metadata.annotations.insert(FOR_SA.into(), a.into());
    }
    g
}

fn pod_as(ns: &str, name: &str, ip: &str, account: &str, l: &[(&str, &str)]) -> Object {
    let mut p = pod(ns, name, ip, l);
    p.spec.service_account_name = account.into();
    Object::Pod(p)
}

#[test]
fn service_account_waypoints() {
    type Labels = &'static [(&'static str, &'static str)];
    /// `(namespace, name, claimed account, creationTimestamp, waypoint-for)`.
    type Claim = (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    );
    /// `(namespace, name, service account, labels)`; the account may be empty (`default`).
    type PodSpec = (&'static str, &'static str, &'static str, Labels);
    struct Case {
        name: &'static str,
        ns_labels: Labels,
        gateways: &'static [Claim],
        pods: &'static [PodSpec],
        /// `(namespace, pod) -> waypoint name in that namespace`.
        want: &'static [(&'static str, &'static str, Option<&'static str>)],
        /// Warnings, on Gateways by name.
        warnings: &'static [&'static str],
    }
    let cases = [
        Case {
            name: "pods of the account use its waypoint, others do not",
            ns_labels: &[],
            gateways: &[("app", "waypoint-reviews", "reviews", "", "all")],
            pods: &[("app", "r", "reviews", &[]), ("app", "d", "", &[])],
            want: &[("app", "r", Some("waypoint-reviews")), ("app", "d", None)],
            warnings: &[],
        },
        Case {
            name: "an unnamed service account is `default`",
            ns_labels: &[],
            gateways: &[("app", "waypoint-default", "default", "", "workload")],
            pods: &[("app", "d", "", &[]), ("app", "r", "reviews", &[])],
            want: &[("app", "d", Some("waypoint-default")), ("app", "r", None)],
            warnings: &[],
        },
        Case {
            name: "the pod's own label beats the account",
            ns_labels: &[],
            gateways: &[("app", "waypoint-reviews", "reviews", "", "all")],
            pods: &[("app", "r", "reviews", &[(UW, "other")])],
            want: &[("app", "r", Some("other"))],
            warnings: &[],
        },
        Case {
            name: "the pod's `none` beats the account",
            ns_labels: &[],
            gateways: &[("app", "waypoint-reviews", "reviews", "", "all")],
            pods: &[("app", "r", "reviews", &[(UW, "none")])],
            want: &[("app", "r", None)],
            warnings: &[],
        },
        Case {
            name: "the account beats the namespace label",
            ns_labels: &[(UW, "other")],
            gateways: &[("app", "waypoint-reviews", "reviews", "", "all")],
            pods: &[("app", "r", "reviews", &[]), ("app", "d", "", &[])],
            want: &[
                ("app", "r", Some("waypoint-reviews")),
                ("app", "d", Some("other")),
            ],
            warnings: &[],
        },
        Case {
            name: "the same account in another namespace is not bound",
            ns_labels: &[],
            gateways: &[("app", "waypoint-reviews", "reviews", "", "all")],
            pods: &[("elsewhere", "r", "reviews", &[])],
            want: &[("elsewhere", "r", None)],
            warnings: &[],
        },
        Case {
            name: "two claimants without timestamps: the first by name, one warning",
            ns_labels: &[],
            gateways: &[
                ("app", "b-wp", "reviews", "", "all"),
                ("app", "a-wp", "reviews", "", "all"),
            ],
            pods: &[("app", "r", "reviews", &[]), ("app", "r2", "reviews", &[])],
            want: &[("app", "r", Some("a-wp")), ("app", "r2", Some("a-wp"))],
            warnings: &["b-wp"],
        },
        Case {
            name: "two claimants: the oldest wins whatever its name",
            ns_labels: &[],
            gateways: &[
                ("app", "a-wp", "reviews", "2026-03-01T00:00:00Z", "all"),
                ("app", "b-wp", "reviews", "2025-12-31T23:59:59Z", "all"),
            ],
            pods: &[("app", "r", "reviews", &[])],
            want: &[("app", "r", Some("b-wp"))],
            warnings: &["a-wp"],
        },
        Case {
            name: "a claim by a service-only waypoint is ignored: the namespace's applies",
            ns_labels: &[(UW, "other")],
            gateways: &[("app", "waypoint-reviews", "reviews", "", "service")],
            pods: &[("app", "r", "reviews", &[])],
            want: &[("app", "r", Some("other"))],
            warnings: &["waypoint-reviews"],
        },
        Case {
            name: "a waypoint's own pod does not go through the account's waypoint",
            ns_labels: &[],
            gateways: &[("app", "waypoint-reviews", "reviews", "", "all")],
            pods: &[(
                "app",
                "wp-0",
                "reviews",
                &[("gateway.networking.k8s.io/gateway-name", "waypoint-reviews")],
            )],
            want: &[("app", "wp-0", None)],
            warnings: &[],
        },
    ];
    for c in cases {
        let mut objects = vec![
            namespace("app", c.ns_labels),
            namespace("elsewhere", &[]),
            gateway("app", "other", Some("all")),
        ];
        for (ns, name, account, created, waypoint_for) in c.gateways {
            let mut g = account_gateway(ns, name, Some(account), created);
            g.metadata
                .labels
                .insert("istio.io/waypoint-for".into(), waypoint_for.to_string());
            objects.push(Object::Gateway(g));
        }
        for (i, (ns, name, account, l)) in c.pods.iter().enumerate() {
            objects.push(pod_as(ns, name, &format!("10.0.0.{}", i + 1), account, l));
        }
        let t = run(objects);
        for (ns, name, want) in c.want {
            let w = workload(&t, ns, name).expect(c.name);
            assert_eq!(
                w.waypoint,
                want.and_then(|gw| waypoint_at(ns, gw)),
                "{}: {ns}/{name}",
                c.name
            );
        }
        let warned: Vec<(Kind, &str)> = t
            .warnings
            .iter()
            .map(|(k, _)| (k.kind, k.name.as_str()))
            .collect();
        let want: Vec<(Kind, &str)> = c.warnings.iter().map(|n| (Kind::Gateway, *n)).collect();
        assert_eq!(warned, want, "{}: {:?}", c.name, t.warnings);
    }
}

#[test]
fn removing_the_annotation_unbinds_the_pods() {
    let mut idx = index([
        namespace("app", &[]),
        Object::Gateway(account_gateway(
            "app",
            "waypoint-reviews",
            Some("reviews"),
            "",
        )),
        pod_as("app", "r", "10.0.0.1", "reviews", &[]),
    ]);
    let mut translator = Translator::new(Options::default());
    let targets = |t: &Translation| -> BTreeMap<String, proto::waypoint::Target> {
        waypoint_set(
            t,
            "app",
            "waypoint-reviews",
            proto::WAYPOINT_TARGET_TYPE_URL,
        )
    };
    let t = translator.translate(&idx, &Scope::All);
    assert_eq!(
        workload(&t, "app", "r").expect("pod").waypoint,
        waypoint_at("app", "waypoint-reviews")
    );
    assert_eq!(targets(&t).len(), 1, "the pod is the waypoint's target");
    // A Gateway edit makes meshd translate every namespace again (`pipeline`).
    idx.apply(Object::Gateway(account_gateway(
        "app",
        "waypoint-reviews",
        None,
        "",
    )));
    let t = translator.translate(&idx, &Scope::All);
    assert_eq!(workload(&t, "app", "r").expect("pod").waypoint, None);
    let changed = t
        .changed
        .get(proto::ADDRESS_TYPE_URL)
        .expect("addresses reported");
    assert!(
        changed.iter().any(|n| &**n == "Kubernetes//Pod/app/r"),
        "{changed:?}"
    );
    assert!(targets(&t).is_empty(), "{:?}", targets(&t));
}
