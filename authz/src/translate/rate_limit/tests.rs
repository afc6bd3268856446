#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use super::*;
use crate::http::HttpStringMatch;
use crate::model::StringMatch;

fn yaml(spec: &str) -> String {
    format!(
        "apiVersion: policy.mesh.dev/v1alpha1\nkind: LocalRateLimit\nmetadata: {{name: rl, namespace: shop}}\nspec:\n{spec}"
    )
}

#[test]
fn a_full_limit_translates() {
    let t = local_rate_limit(
        yaml(
            "  targetRefs: [{kind: Service, group: \"\", name: payments}]\n  limits:\n  - per: sourcePrincipal\n    maxTokens: 20\n    tokensPerFill: 10\n    fillInterval: 500ms\n    match: [{methods: [POST], paths: [\"/api/*\"], ports: [\"8080\"]}]\n",
        )
        .as_str(),
        "istio-system",
    )
    .unwrap();
    assert_eq!(
        t.targets,
        vec![Target::Service {
            namespace: "shop".into(),
            name: "payments".into()
        }]
    );
    let l = &t.limits[0];
    assert_eq!(l.source, "shop/rl");
    assert_eq!(l.per, RateLimitPer::SourcePrincipal);
    assert_eq!((l.max_tokens, l.tokens_per_fill), (20, 10));
    assert_eq!(l.fill_interval, Duration::from_millis(500));
    assert_eq!(
        l.matches[0].methods,
        vec![HttpStringMatch::Istio(StringMatch::Exact("POST".into()))]
    );
    assert_eq!(
        l.matches[0].paths,
        vec![HttpStringMatch::Istio(StringMatch::Prefix("/api/".into()))]
    );
    assert_eq!(l.matches[0].ports, vec![8080]);
}

#[test]
fn defaults_are_one_bucket_refilled_whole_every_second() {
    let t = local_rate_limit(
        yaml("  targetRef: {kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}\n  limits: [{maxTokens: 5}]\n").as_str(),
        "istio-system",
    )
    .unwrap();
    let l = &t.limits[0];
    assert_eq!(l.per, RateLimitPer::Route);
    assert_eq!((l.max_tokens, l.tokens_per_fill), (5, 5));
    assert_eq!(l.fill_interval, Duration::from_secs(1));
    assert!(l.matches.is_empty());
}

#[test]
fn bad_limits_are_errors_naming_the_field() {
    let refs = "  targetRefs: [{kind: Service, name: payments}]\n";
    let rows: &[(&str, &str)] = &[
        ("  limits: [{maxTokens: 5}]\n", "spec.targetRefs"),
        (&format!("{refs}  limits: []\n"), "spec.limits"),
        (
            &format!("{refs}  limits: [{{tokensPerFill: 5}}]\n"),
            "spec.limits[0].maxTokens",
        ),
        (
            &format!("{refs}  limits: [{{maxTokens: 0}}]\n"),
            "spec.limits[0].maxTokens",
        ),
        (
            &format!("{refs}  limits: [{{maxTokens: 1, tokensPerFill: 0}}]\n"),
            "spec.limits[0].tokensPerFill",
        ),
        (
            &format!("{refs}  limits: [{{maxTokens: 1, fillInterval: 10ms}}]\n"),
            "spec.limits[0].fillInterval",
        ),
        (
            &format!("{refs}  limits: [{{maxTokens: 1, fillInterval: soon}}]\n"),
            "spec.limits[0].fillInterval",
        ),
        (
            &format!("{refs}  limits: [{{maxTokens: 1, per: client}}]\n"),
            "spec.limits[0].per",
        ),
        (
            &format!("{refs}  limits: [{{maxTokens: 1, match: [{{ports: [\"http\"]}}]}}]\n"),
            "spec.limits[0].match[0].ports",
        ),
        (
            "  targetRefs: [{kind: Pod, name: p}]\n  limits: [{maxTokens: 1}]\n",
            "spec.targetRefs[0].kind",
        ),
    ];
    for (spec, field) in rows {
        match local_rate_limit(yaml(spec).as_str(), "istio-system") {
            Err(TranslateError::Invalid { field: f, .. }) => {
                assert!(f.starts_with(field), "{spec}: {f} is not {field}")
            }
            other => panic!("{spec}: {other:?}"),
        }
    }
    // Unknown fields are syntax errors, not silently dropped limits.
    assert!(matches!(
        local_rate_limit(
            yaml(&format!("{refs}  limits: [{{maxTokens: 1, burst: 3}}]\n")).as_str(),
            "istio-system"
        ),
        Err(TranslateError::Syntax { .. })
    ));
}

#[test]
fn durations() {
    let rows = [
        ("50ms", Some(Duration::from_millis(50))),
        ("1s", Some(Duration::from_secs(1))),
        ("1.5s", Some(Duration::from_millis(1500))),
        ("2m", Some(Duration::from_secs(120))),
        ("1h", Some(Duration::from_secs(3600))),
        ("", None),
        ("s", None),
        ("5", None),
        ("5d", None),
        ("-1s", None),
    ];
    for (s, want) in rows {
        assert_eq!(parse_duration(s), want, "{s}");
    }
}
