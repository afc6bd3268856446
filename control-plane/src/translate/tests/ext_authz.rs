//! CUSTOM policies' extension providers: resolved from the mesh config and the index into the
//! HttpPolicy's `ext_authz`, or an error that keeps the policy from being sent.

use proto::waypoint::HttpPolicy;
use proto::waypoint::ext_authz::Protocol;

use super::*;
use crate::mesh_config::MeshConfig;
use crate::translate::ext_authz::resolve;

const MESH: &str = r#"
extensionProviders:
- {name: http, envoyExtAuthzHttp: {service: ext-authz.foo.svc.cluster.local, port: 8000, timeout: 2s, pathPrefix: /check, failOpen: true, statusOnError: "503", includeRequestHeadersInCheck: [x-ext-authz], includeAdditionalHeadersInCheck: {x-from: waypoint}, headersToUpstreamOnAllow: [x-user], headersToDownstreamOnDeny: [x-reason], headersToDownstreamOnAllow: [x-trace], includeRequestBodyInCheck: {maxRequestBytes: 2048, packAsBytes: true}}}
- {name: grpc, envoyExtAuthzGrpc: {service: foo/ext-authz.foo.svc.cluster.local, port: 9000}}
- {name: by-ip, envoyExtAuthzGrpc: {service: 127.0.0.1, port: 9191}}
- {name: v6, envoyExtAuthzGrpc: {service: ext-v6.foo.svc.cluster.local, port: 9000}}
- {name: missing, envoyExtAuthzHttp: {service: nope.foo.svc.cluster.local, port: 80}}
- {name: wrong-ns, envoyExtAuthzHttp: {service: bar/ext-authz.foo.svc.cluster.local, port: 80}}
- {name: headless, envoyExtAuthzHttp: {service: hl.foo.svc.cluster.local, port: 80}}
- {name: not-k8s, envoyExtAuthzHttp: {service: authz.example.com, port: 80}}
"#;

fn opts() -> Options {
    Options {
        mesh: MeshConfig::parse(MESH).expect("mesh config"),
        ..Options::default()
    }
}

fn objects() -> Vec<Object> {
    let mut api = service("shop", "api", "10.96.0.10", &[("app", "api")]);
    api.metadata.labels = labels(&[("istio.io/use-waypoint", "wp")]);
    vec![
        Object::Service(api),
        namespace("shop", &[("istio.io/dataplane-mode", "ambient")]),
        namespace("foo", &[]),
        gateway("shop", "wp", Some("all")),
        Object::Service(service("foo", "ext-authz", "10.96.0.50", &[])),
        Object::Service(service("foo", "ext-v6", "fd00::50", &[])),
        Object::Service(service("foo", "hl", "None", &[])),
    ]
}

fn custom(name: &str, provider: &str) -> Object {
    authz_policy(&format!(
        "metadata: {{name: {name}, namespace: shop}}\nspec: {{targetRefs: [{{kind: Gateway, \
         group: gateway.networking.k8s.io, name: wp}}], action: CUSTOM, provider: {{name: \
         {provider}}}, rules: [{{to: [{{operation: {{paths: [/api/*]}}}}]}}]}}"
    ))
}

#[test]
fn providers_resolve_to_an_address_or_an_error() {
    let idx = index(objects());
    let opts = opts();
    // (provider, Ok(address, protocol) or Err(part of the error))
    type Want = Result<(&'static str, Protocol), &'static str>;
    let rows: &[(&str, Want)] = &[
        ("http", Ok(("10.96.0.50:8000", Protocol::Http))),
        ("grpc", Ok(("10.96.0.50:9000", Protocol::Grpc))),
        ("by-ip", Ok(("127.0.0.1:9191", Protocol::Grpc))),
        ("v6", Ok(("[fd00::50]:9000", Protocol::Grpc))),
        (
            "unknown",
            Err("not an envoyExtAuthzHttp or envoyExtAuthzGrpc"),
        ),
        ("missing", Err("no such Service")),
        ("wrong-ns", Err("is not the hostname's")),
        ("headless", Err("no cluster IP")),
        ("not-k8s", Err("not a Kubernetes service hostname")),
    ];
    for (provider, want) in rows {
        let got = resolve(&idx, &opts, provider);
        match (want, got) {
            (Ok((address, protocol)), Ok(e)) => {
                assert_eq!(e.address, *address, "{provider}");
                assert_eq!(e.protocol, *protocol as i32, "{provider}");
                assert_eq!(e.name, *provider);
            }
            (Err(part), Err(e)) => assert!(e.contains(part), "{provider}: {e}"),
            (want, got) => panic!("{provider}: want {want:?}, got {got:?}"),
        }
    }
    // Every setting is carried.
    let e = resolve(&idx, &opts, "http").expect("http");
    assert_eq!(e.timeout_ms, 2000);
    assert_eq!(e.path_prefix, "/check");
    assert!(e.fail_open);
    assert_eq!(e.status_on_error, 503);
    assert_eq!(e.include_request_headers_in_check, ["x-ext-authz"]);
    assert_eq!(e.include_additional_headers_in_check["x-from"], "waypoint");
    assert_eq!(e.headers_to_upstream_on_allow, ["x-user"]);
    assert_eq!(e.headers_to_downstream_on_deny, ["x-reason"]);
    assert_eq!(e.headers_to_downstream_on_allow, ["x-trace"]);
    let g = resolve(&idx, &opts, "grpc").expect("grpc");
    assert_eq!(g.timeout_ms, 600_000);
    assert_eq!(g.status_on_error, 403);
    let body = e.include_request_body_in_check.expect("the body setting");
    assert_eq!(
        (
            body.max_request_bytes,
            body.allow_partial_message,
            body.pack_as_bytes
        ),
        (2048, false, true)
    );
    assert_eq!(g.include_request_body_in_check, None);
}

#[test]
fn a_custom_policy_is_sent_with_its_provider_or_not_at_all() {
    let mut all = objects();
    all.push(custom("ext", "http"));
    all.push(custom("lost", "unknown"));
    let t = translate(&index(all), &opts());
    let policies: BTreeMap<String, HttpPolicy> =
        waypoint_set(&t, "shop", "wp", proto::WAYPOINT_POLICY_TYPE_URL);
    let keys: Vec<&str> = policies.keys().map(String::as_str).collect();
    assert_eq!(keys, ["shop/ext"], "the unresolved one is not sent");
    let ext = &policies["shop/ext"];
    assert_eq!(ext.provider, "http");
    assert_eq!(
        ext.ext_authz.as_ref().map(|e| e.address.as_str()),
        Some("10.96.0.50:8000")
    );
    let errors: Vec<&ObjectKey> = t.errors.iter().map(|(k, _)| k).collect();
    assert_eq!(errors, [&key(Kind::AuthorizationPolicy, "shop", "lost")]);

    // Without a mesh config, every CUSTOM policy is an error.
    let t = run([objects(), vec![custom("ext", "http")]].concat());
    assert_eq!(t.errors.len(), 1, "{:?}", t.errors);
}

/// The provider's Service changes in its own namespace: the CUSTOM policy elsewhere follows,
/// as a full translation would have it, and is named as changed.
#[test]
fn a_provider_service_change_reaches_the_policy() {
    use crate::translate::{Scope, Translator};
    let mut all = objects();
    all.push(custom("ext", "http"));
    let mut idx = index(all);
    let mut t = Translator::new(opts());
    t.translate(&idx, &Scope::All);
    let foo = Scope::Namespaces(["foo".to_string()].into());
    let address = |tr: &Translation| {
        let p: BTreeMap<String, HttpPolicy> =
            waypoint_set(tr, "shop", "wp", proto::WAYPOINT_POLICY_TYPE_URL);
        p.get("shop/ext")
            .and_then(|p| p.ext_authz.as_ref())
            .map(|e| e.address.clone())
    };
    let changed = |tr: &Translation| -> Vec<String> {
        tr.changed
            .get(proto::WAYPOINT_POLICY_TYPE_URL)
            .into_iter()
            .flatten()
            .map(|n| n.to_string())
            .collect()
    };

    idx.apply(Object::Service(service(
        "foo",
        "ext-authz",
        "10.96.0.51",
        &[],
    )));
    let moved = t.translate(&idx, &foo);
    assert_eq!(address(&moved).as_deref(), Some("10.96.0.51:8000"));
    assert_eq!(changed(&moved), ["shop/ext"]);
    assert_eq!(moved.resources, translate(&idx, &opts()).resources);

    idx.delete(&key(Kind::Service, "foo", "ext-authz"));
    let gone = t.translate(&idx, &foo);
    assert_eq!(address(&gone), None, "not sent without its authorizer");
    assert_eq!(changed(&gone), ["shop/ext"]);
    let errors: Vec<&ObjectKey> = gone.errors.iter().map(|(k, _)| k).collect();
    assert_eq!(errors, [&key(Kind::AuthorizationPolicy, "shop", "ext")]);
}
