//! RequestAuthentication -> the `jwt_rules` of waypoint Targets: where each attaches, what a
//! rule carries, and the warnings for what cannot apply.

use proto::waypoint::{ClaimToHeader, JwtHeader, JwtRule, Target};

use super::*;
use crate::translate::{Scope, Translator};

const UW: &str = "istio.io/use-waypoint";
const API: &str = "shop/api.shop.svc.cluster.local";
const DB: &str = "shop/db.shop.svc.cluster.local";
const JWKS: &str = r#"{"keys": [{"kty": "EC", "crv": "P-256", "x": "x", "y": "y"}]}"#;

fn request_auth(ns: &str, name: &str, spec: &str) -> Object {
    Object::RequestAuthentication(raw(&format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}"
    )))
}

fn bound_service(name: &str, vip: &str, waypoint: &str) -> Object {
    let mut s = service("shop", name, vip, &[("app", name)]);
    s.metadata.labels = labels(&[(UW, waypoint)]);
    Object::Service(s)
}

fn pod_bound(name: &str, ip: &str, waypoint: &str) -> Object {
    Object::Pod(pod("shop", name, ip, &[(UW, waypoint)]))
}

/// A rule as meshd sends it, from the fields a test cares about.
fn wire(source: &str, issuer: &str, uri: &str) -> JwtRule {
    JwtRule {
        source: source.into(),
        issuer: issuer.into(),
        jwks_uri: uri.into(),
        ..Default::default()
    }
}

fn mesh(extra: Vec<Object>) -> Vec<Object> {
    let mut objects = vec![
        namespace("shop", &[("istio.io/dataplane-mode", "ambient")]),
        gateway("shop", "wp", Some("all")),
        gateway("shop", "other", None),
        bound_service("api", "10.96.0.10", "wp"),
        bound_service("db", "10.96.0.11", "other"),
        pod_bound("worker", "10.0.0.3", "wp"),
    ];
    objects.extend(extra);
    objects
}

fn rules_of(t: &Translation, waypoint: &str, target: &str) -> Vec<JwtRule> {
    let set: BTreeMap<String, Target> =
        waypoint_set(t, "shop", waypoint, proto::WAYPOINT_TARGET_TYPE_URL);
    set.get(target).expect(target).jwt_rules.clone()
}

fn warnings_of<'a>(t: &'a Translation, name: &str) -> Vec<&'a str> {
    t.warnings
        .iter()
        .filter(|(k, _)| k.kind == Kind::RequestAuthentication && k.name == name)
        .map(|(_, w)| w.as_str())
        .collect()
}

const GW: &str = "{kind: Gateway, group: gateway.networking.k8s.io, name: wp}";
const CLASS: &str = "{kind: GatewayClass, group: gateway.networking.k8s.io, name: istio-waypoint}";

#[test]
fn rules_attach_where_istio_attaches_them_to_waypoints() {
    let rule = |iss: &str| format!("jwtRules: [{{issuer: {iss}, jwksUri: 'https://idp/{iss}'}}]");
    let policies = vec![
        request_auth(
            "shop",
            "gw",
            &format!("{{targetRefs: [{GW}], {}}}", rule("gw")),
        ),
        request_auth(
            "shop",
            "svc",
            &format!(
                "{{targetRef: {{kind: Service, name: api}}, {}}}",
                rule("svc")
            ),
        ),
        request_auth(
            "istio-system",
            "mesh",
            &format!("{{targetRefs: [{CLASS}], {}}}", rule("mesh")),
        ),
        // Not for waypoints: a selector, nothing at all, and the GatewayClass outside the root.
        request_auth(
            "shop",
            "selector",
            &format!(
                "{{selector: {{matchLabels: {{app: api}}}}, {}}}",
                rule("sel")
            ),
        ),
        request_auth(
            "istio-system",
            "root-wide",
            &format!("{{{}}}", rule("root")),
        ),
        request_auth(
            "shop",
            "class-here",
            &format!("{{targetRefs: [{CLASS}], {}}}", rule("class")),
        ),
        // Another namespace's service is not this policy's to name.
        request_auth(
            "default",
            "elsewhere",
            &format!(
                "{{targetRefs: [{{kind: Service, name: api, namespace: shop}}], {}}}",
                rule("x")
            ),
        ),
    ];
    let t = run(mesh(policies));
    let mesh_rule = wire("istio-system/mesh", "mesh", "https://idp/mesh");
    let gw_rule = wire("shop/gw", "gw", "https://idp/gw");
    let svc_rule = wire("shop/svc", "svc", "https://idp/svc");
    type Case = (&'static str, &'static str, Vec<JwtRule>);
    let cases: Vec<Case> = vec![
        // Ordered by policy key, each once.
        (
            "wp",
            API,
            vec![mesh_rule.clone(), gw_rule.clone(), svc_rule],
        ),
        ("wp", "shop/worker", vec![mesh_rule.clone(), gw_rule]),
        ("other", DB, vec![mesh_rule]),
    ];
    for (waypoint, target, want) in cases {
        assert_eq!(rules_of(&t, waypoint, target), want, "{waypoint} {target}");
    }
    for (name, want) in [
        ("selector", "a selector policy applies to sidecars"),
        (
            "root-wide",
            "a policy without targetRefs applies to sidecars",
        ),
        (
            "class-here",
            "spec.targetRefs[0]: a GatewayClass reference is only allowed in the root namespace",
        ),
        (
            "elsewhere",
            "spec.targetRefs[0]: namespace \"shop\" is not the policy's",
        ),
    ] {
        let w = warnings_of(&t, name);
        assert!(w.len() == 1 && w[0].starts_with(want), "{name}: {w:?}");
    }
    assert!(warnings_of(&t, "gw").is_empty());
    assert!(t.errors.is_empty(), "{:?}", t.errors);
}

#[test]
fn every_field_of_a_rule_is_carried() {
    let spec = r#"{targetRefs: [{kind: Service, name: api}], jwtRules: [{
        issuer: "https://idp.example.com",
        audiences: [shop, "https://shop.example.com/"],
        jwksUri: "https://idp.example.com/jwks",
        fromHeaders: [{name: X-Jwt, prefix: "Token "}, {name: x-other}],
        fromParams: [token],
        fromCookies: [session],
        outputPayloadToHeader: X-Jwt-Payload,
        forwardOriginalToken: true,
        outputClaimToHeaders: [{header: x-sub, claim: sub}, {header: x-team, claim: org.team}],
        timeout: 1.5s}, {
        issuer: inline,
        jwks: '{"keys": [{"kty": "EC", "crv": "P-256", "x": "x", "y": "y"}]}'}]}"#;
    let t = run(mesh(vec![request_auth("shop", "full", spec)]));
    let want = vec![
        JwtRule {
            source: "shop/full".into(),
            issuer: "https://idp.example.com".into(),
            audiences: vec!["shop".into(), "https://shop.example.com/".into()],
            jwks_uri: "https://idp.example.com/jwks".into(),
            jwks: String::new(),
            from_headers: vec![
                JwtHeader {
                    name: "x-jwt".into(),
                    prefix: "Token ".into(),
                },
                JwtHeader {
                    name: "x-other".into(),
                    prefix: String::new(),
                },
            ],
            from_params: vec!["token".into()],
            from_cookies: vec!["session".into()],
            output_payload_to_header: "x-jwt-payload".into(),
            forward_original_token: true,
            output_claim_to_headers: vec![
                ClaimToHeader {
                    header: "x-sub".into(),
                    claim: "sub".into(),
                },
                ClaimToHeader {
                    header: "x-team".into(),
                    claim: "org.team".into(),
                },
            ],
            timeout_ms: 1500,
        },
        JwtRule {
            source: "shop/full".into(),
            issuer: "inline".into(),
            jwks: JWKS.into(),
            ..Default::default()
        },
    ];
    assert_eq!(rules_of(&t, "wp", API), want);
    assert!(warnings_of(&t, "full").is_empty(), "{:?}", t.warnings);
}

#[test]
fn bad_rules_are_skipped_with_a_warning() {
    let ok = "{issuer: good, jwksUri: 'http://idp/jwks'}";
    let cases: &[(&str, &str)] = &[
        (
            "{jwksUri: 'https://idp/jwks'}",
            "spec.jwtRules[0].issuer: required",
        ),
        (
            "{issuer: a, jwksUri: 'ftp://idp/jwks'}",
            "spec.jwtRules[0].jwksUri: \"ftp://idp/jwks\" is not an http(s) URL",
        ),
        (
            "{issuer: a, jwksUri: '/jwks'}",
            "spec.jwtRules[0].jwksUri: \"/jwks\" is not an http(s) URL",
        ),
        (
            "{issuer: a, jwks: 'not json'}",
            "spec.jwtRules[0].jwks: not a JSON Web Key Set with keys",
        ),
        (
            "{issuer: a, jwks: '{\"keys\": []}'}",
            "spec.jwtRules[0].jwks: not a JSON Web Key Set with keys",
        ),
        (
            "{issuer: a, jwksUri: 'http://i/j', fromHeaders: [{prefix: x}]}",
            "spec.jwtRules[0].fromHeaders[0].name: \"\" is not a header name",
        ),
        (
            "{issuer: a, jwksUri: 'http://i/j', fromHeaders: [{name: 'a b'}]}",
            "spec.jwtRules[0].fromHeaders[0].name: \"a b\" is not a header name",
        ),
        (
            "{issuer: a, jwksUri: 'http://i/j', fromParams: ['']}",
            "spec.jwtRules[0].fromParams[0]: empty",
        ),
        (
            "{issuer: a, jwksUri: 'http://i/j', fromCookies: [c, '']}",
            "spec.jwtRules[0].fromCookies[1]: empty",
        ),
        (
            "{issuer: a, jwksUri: 'http://i/j', outputPayloadToHeader: 'x:y'}",
            "spec.jwtRules[0].outputPayloadToHeader: \"x:y\" is not a header name",
        ),
        (
            "{issuer: a, jwksUri: 'http://i/j', outputClaimToHeaders: [{header: x-sub}]}",
            "spec.jwtRules[0].outputClaimToHeaders[0].claim: required",
        ),
        (
            "{issuer: a, jwksUri: 'http://i/j', outputClaimToHeaders: [{claim: sub}]}",
            "spec.jwtRules[0].outputClaimToHeaders[0].header: \"\" is not a header name",
        ),
        (
            "{issuer: a, jwksUri: 'http://i/j', timeout: soon}",
            "spec.jwtRules[0].timeout: \"soon\" is not a duration (e.g. 5s)",
        ),
        ("{issuer: [a], jwksUri: 'http://i/j'}", "spec.jwtRules[0]: "),
    ];
    for (bad, want) in cases {
        let spec = format!("{{targetRefs: [{GW}], jwtRules: [{bad}, {ok}]}}");
        let t = run(mesh(vec![request_auth("shop", "p", &spec)]));
        // The good rule still applies; the bad one is named in one warning.
        let rules = rules_of(&t, "wp", API);
        assert_eq!(rules, [wire("shop/p", "good", "http://idp/jwks")], "{bad}");
        let w = warnings_of(&t, "p");
        assert!(
            w.len() == 1 && w[0].starts_with(want) && w[0].ends_with("this rule is skipped"),
            "{bad}: {w:?}"
        );
    }

    // A policy whose every rule or reference is bad applies nowhere; no panic, no error.
    for (spec, want) in [
        (
            format!("{{targetRefs: [{GW}], jwtRules: [{{jwksUri: 'http://i/j'}}]}}"),
            "spec.jwtRules[0].issuer: required",
        ),
        (
            "{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: nope}], jwtRules: [{issuer: a, jwksUri: 'http://i/j'}]}".to_string(),
            "spec.targetRefs[0]: Gateway shop/nope is not a waypoint",
        ),
        (
            "{targetRefs: [{kind: ServiceEntry, group: networking.istio.io, name: ext}], jwtRules: [{issuer: a, jwksUri: 'http://i/j'}]}".to_string(),
            "spec.targetRefs[0]: ServiceEntry ext is not supported yet",
        ),
        (
            "{targetRefs: [{kind: Pod, name: api}], jwtRules: [{issuer: a, jwksUri: 'http://i/j'}]}".to_string(),
            "spec.targetRefs[0]: kind \"Pod\"",
        ),
        ("{targetRefs: 7}".to_string(), "spec: "),
        ("[1, 2]".to_string(), "spec: "),
    ] {
        let t = run(mesh(vec![request_auth("shop", "p", &spec)]));
        assert!(rules_of(&t, "wp", API).is_empty(), "{spec}");
        let w = warnings_of(&t, "p");
        assert!(w.iter().any(|w| w.starts_with(want)), "{spec}: {w:?}");
        assert!(t.errors.is_empty(), "{spec}: {:?}", t.errors);
    }
}

#[test]
fn a_rule_without_keys_means_openid_discovery() {
    type Case = (&'static str, &'static str, Option<&'static str>);
    let cases: Vec<Case> = vec![
        ("'https://idp.example.com'", "https://idp.example.com", None),
        (
            "'https://idp.example.com/realms/shop/'",
            "https://idp.example.com/realms/shop/",
            None,
        ),
        ("'http://idp.shop:8080'", "http://idp.shop:8080", None),
        // Istio accepts these too; their tokens are refused at the waypoint, said here.
        (
            "testing@secure.istio.io",
            "testing@secure.istio.io",
            Some(
                "spec.jwtRules[0].issuer: \"testing@secure.istio.io\" is not a URL to discover keys from",
            ),
        ),
        (
            "'https://idp.example.com?tenant=a'",
            "https://idp.example.com?tenant=a",
            Some(
                "spec.jwtRules[0].issuer: \"https://idp.example.com?tenant=a\" is not a URL to discover keys from",
            ),
        ),
        (
            "'https://idp.example.com#a'",
            "https://idp.example.com#a",
            Some(
                "spec.jwtRules[0].issuer: \"https://idp.example.com#a\" is not a URL to discover keys from",
            ),
        ),
    ];
    for (yaml, issuer, warning) in cases {
        let spec = format!("{{targetRefs: [{GW}], jwtRules: [{{issuer: {yaml}, timeout: 2s}}]}}");
        let t = run(mesh(vec![request_auth("shop", "oidc", &spec)]));
        // Kept with neither jwks nor jwks_uri: the waypoint discovers the keys.
        let want = JwtRule {
            timeout_ms: 2000,
            ..wire("shop/oidc", issuer, "")
        };
        assert_eq!(rules_of(&t, "wp", API), [want], "{yaml}");
        let w = warnings_of(&t, "oidc");
        match warning {
            None => assert!(w.is_empty(), "{yaml}: {w:?}"),
            Some(want) => assert!(
                w.len() == 1 && w[0].starts_with(want) && w[0].ends_with("this issuer's tokens"),
                "{yaml}: {w:?}"
            ),
        }
        assert!(t.errors.is_empty(), "{yaml}: {:?}", t.errors);
    }
}

#[test]
fn a_changed_policy_reaches_targets_in_other_namespaces() {
    // The waypoint is in shop; a service of `web` uses it. A policy change in shop (a
    // namespace-scoped update) must still redo web's target.
    let mut web_svc = service("web", "front", "10.96.0.30", &[("app", "front")]);
    web_svc.metadata.labels = labels(&[(UW, "wp"), ("istio.io/use-waypoint-namespace", "shop")]);
    let mut objects = mesh(vec![
        namespace("web", &[("istio.io/dataplane-mode", "ambient")]),
        Object::Service(web_svc),
    ]);
    let mut translator = Translator::new(Options::default());
    let mut idx = index(objects.drain(..));
    let first = translator.translate(&idx, &Scope::All);
    let front = "web/front.web.svc.cluster.local";
    assert!(rules_of(&first, "wp", front).is_empty());

    idx.apply(request_auth(
        "shop",
        "gw",
        &format!("{{targetRefs: [{GW}], jwtRules: [{{issuer: i, jwksUri: 'http://idp/k'}}]}}"),
    ));
    let scope = Scope::Namespaces(["shop".to_string()].into());
    let second = translator.translate(&idx, &scope);
    assert_eq!(
        rules_of(&second, "wp", front),
        [wire("shop/gw", "i", "http://idp/k")]
    );
    let changed = &second.changed[proto::WAYPOINT_TARGET_TYPE_URL];
    assert!(changed.iter().any(|n| &**n == front), "{changed:?}");
}
