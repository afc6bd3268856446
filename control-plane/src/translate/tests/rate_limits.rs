//! LocalRateLimits: where their limits attach, in what order, and what a broken one does.

use proto::waypoint::{RateLimit, Target, rate_limit::Per};

use super::*;

const UW: &str = "istio.io/use-waypoint";

/// A LocalRateLimit in `ns` with `targetRefs: [refs]` and one limit `{limit}`.
pub(super) fn local_rate_limit(ns: &str, name: &str, refs: &str, limit: &str) -> Object {
    Object::LocalRateLimit(raw(&format!(
        "apiVersion: policy.mesh.dev/v1alpha1\nkind: LocalRateLimit\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  targetRefs: [{refs}]\n  limits: [{limit}]\n"
    )))
}

fn bound(name: &str, vip: &str, waypoint: &str) -> Object {
    let mut s = service("shop", name, vip, &[("app", name)]);
    s.metadata.labels = labels(&[(UW, waypoint)]);
    Object::Service(s)
}

/// (source, per, max tokens, tokens per fill, fill interval ms, matched methods)
type Want = (&'static str, Per, u32, u32, u32, &'static [&'static str]);

fn summary(limits: &[RateLimit]) -> Vec<(String, Per, u32, u32, u32, Vec<String>)> {
    limits
        .iter()
        .map(|l| {
            (
                l.source.clone(),
                Per::try_from(l.per).expect("a known per"),
                l.max_tokens,
                l.tokens_per_fill,
                l.fill_interval_ms,
                l.r#match
                    .iter()
                    .flat_map(|m| m.methods.iter().map(|s| format!("{:?}", s.kind)))
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn limits_attach_where_their_references_point() {
    let gw = "{kind: Gateway, group: gateway.networking.k8s.io, name: wp}";
    let class = "{kind: GatewayClass, group: gateway.networking.k8s.io, name: istio-waypoint}";
    let t = run([
        namespace("shop", &[("istio.io/dataplane-mode", "ambient")]),
        gateway("shop", "wp", Some("all")),
        gateway("shop", "other", None),
        bound("api", "10.96.0.10", "wp"),
        bound("db", "10.96.0.11", "other"),
        Object::Pod(pod("shop", "worker", "10.0.0.3", &[(UW, "wp")])),
        local_rate_limit(
            "shop",
            "per-client",
            "{kind: Service, name: api}",
            "{per: sourcePrincipal, maxTokens: 20, tokensPerFill: 10, fillInterval: 500ms, match: [{methods: [POST]}]}",
        ),
        local_rate_limit("shop", "gw-burst", gw, "{maxTokens: 100}"),
        local_rate_limit(
            "istio-system",
            "mesh",
            class,
            "{maxTokens: 1000, fillInterval: 1m}",
        ),
        // Errors and warnings: limit nothing.
        local_rate_limit("shop", "broken", gw, "{maxTokens: 0}"),
        local_rate_limit(
            "shop",
            "no-waypoint",
            "{kind: Gateway, group: gateway.networking.k8s.io, name: nope}",
            "{maxTokens: 1}",
        ),
        // GatewayClass outside the root namespace is refused by the translation.
        local_rate_limit("shop", "class-here", class, "{maxTokens: 1}"),
    ]);
    let mesh: Want = ("istio-system/mesh", Per::Route, 1000, 1000, 60_000, &[]);
    let burst: Want = ("shop/gw-burst", Per::Route, 100, 100, 1000, &[]);
    let client: Want = (
        "shop/per-client",
        Per::SourcePrincipal,
        20,
        10,
        500,
        &["Some(Exact(\"POST\"))"],
    );
    let cases: [(&str, &str, Vec<Want>); 3] = [
        (
            "wp",
            "shop/api.shop.svc.cluster.local",
            vec![mesh, burst, client],
        ),
        ("wp", "shop/worker", vec![mesh, burst]),
        ("other", "shop/db.shop.svc.cluster.local", vec![mesh]),
    ];
    for (waypoint, target, want) in cases {
        let set: BTreeMap<String, Target> =
            waypoint_set(&t, "shop", waypoint, proto::WAYPOINT_TARGET_TYPE_URL);
        let got = summary(&set.get(target).expect(target).rate_limits);
        let want: Vec<_> = want
            .iter()
            .map(|(s, p, m, f, i, methods)| {
                (
                    s.to_string(),
                    *p,
                    *m,
                    *f,
                    *i,
                    methods.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(got, want, "{target}");
    }
    let errors: Vec<&str> = t
        .errors
        .iter()
        .filter(|(k, _)| k.kind == Kind::LocalRateLimit)
        .map(|(k, _)| k.name.as_str())
        .collect();
    assert_eq!(errors, ["broken", "class-here"]);
    let broken = &t
        .errors
        .iter()
        .find(|(k, _)| k.name == "broken")
        .expect("broken")
        .1;
    assert!(broken.contains("maxTokens"), "{broken}");
    assert!(
        t.warnings
            .iter()
            .any(|(k, w)| k.name == "no-waypoint"
                && w.contains("Gateway shop/nope is not a waypoint")),
        "{:?}",
        t.warnings
    );
}
