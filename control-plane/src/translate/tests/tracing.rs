//! MeshConfig tracing and Telemetry: the mesh's Tracing resource, and a waypoint's own where a
//! Telemetry of its namespace or for it says so; its collector resolved against the index, a
//! warning (and no export) when it does not resolve, and a mesh config change or the
//! collector's Service appearing named as a change.

use proto::waypoint::Tracing;
use proto::waypoint::tracing::Exporter;

use super::*;
use crate::mesh_config::MeshConfig;
use crate::translate::{Scope, Translator};

const PROVIDERS: &str = "extensionProviders:
- {name: otel, opentelemetry: {service: otel-collector.observability.svc.cluster.local, port: 4317, maxTagLength: 128}}
- {name: otel-short, opentelemetry: {service: otel-collector.observability, port: 4317}}
- {name: zipkin, zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}}
- {name: missing, zipkin: {service: nope.istio-system.svc.cluster.local, port: 9411}}
- {name: headless, zipkin: {service: hl.istio-system, port: 9411}}
- {name: by-ip, opentelemetry: {service: 127.0.0.1, port: 4317}}
- {name: elsewhere, zipkin: {service: zipkin.example.com, port: 9411}}
- {name: otel-http, opentelemetry: {service: otel-collector.observability, port: 4318, http: {path: /otlp, timeout: 3s, headers: [{name: x-api-key, value: k1}]}}}
";

fn opts(yaml: &str) -> Options {
    Options {
        mesh: MeshConfig::parse(yaml).expect("mesh config"),
        ..Options::default()
    }
}

fn objects() -> Vec<Object> {
    vec![
        namespace("istio-system", &[]),
        namespace("observability", &[]),
        Object::Service(service("istio-system", "zipkin", "10.96.0.9", &[])),
        Object::Service(service("istio-system", "hl", "None", &[])),
        Object::Service(service("observability", "otel-collector", "fd00::17", &[])),
    ]
}

/// The Tracing every waypoint is served (a client that is no waypoint included).
fn served(t: &Translation) -> Option<Tracing> {
    let set: BTreeMap<String, Tracing> =
        waypoint_set(t, "shop", "wp", proto::WAYPOINT_TRACING_TYPE_URL);
    assert!(set.len() <= 1, "{set:?}");
    if let Some(name) = set.keys().next() {
        assert_eq!(name, proto::WAYPOINT_TRACING_NAME);
    }
    set.into_values().next()
}

#[test]
fn the_collector_resolves_to_an_address_or_a_warning() {
    // (mesh config, Ok(exporter, address) or Err(part of the warning))
    type Want = Option<Result<(Exporter, &'static str), &'static str>>;
    let zipkin_default =
        "defaultConfig: {tracing: {zipkin: {address: 'zipkin.istio-system:9411'}}}";
    let select = |name: &str| format!("{PROVIDERS}defaultProviders: {{tracing: [{name}]}}\n");
    let rows: Vec<(String, Want)> = vec![
        (String::new(), None),
        (PROVIDERS.into(), None),
        (
            zipkin_default.into(),
            Some(Ok((Exporter::Zipkin, "10.96.0.9:9411"))),
        ),
        (
            select("otel"),
            Some(Ok((Exporter::OtlpGrpc, "[fd00::17]:4317"))),
        ),
        (
            select("otel-short"),
            Some(Ok((Exporter::OtlpGrpc, "[fd00::17]:4317"))),
        ),
        (
            select("zipkin"),
            Some(Ok((Exporter::Zipkin, "10.96.0.9:9411"))),
        ),
        (
            select("otel-http"),
            Some(Ok((Exporter::OtlpHttp, "[fd00::17]:4318"))),
        ),
        (
            select("by-ip"),
            Some(Ok((Exporter::OtlpGrpc, "127.0.0.1:4317"))),
        ),
        (select("missing"), Some(Err("no such Service"))),
        (select("headless"), Some(Err("no cluster IP"))),
        (
            select("elsewhere"),
            Some(Err("not a Kubernetes service hostname")),
        ),
        (
            "defaultConfig: {tracing: {zipkin: {address: 'zipkin.nowhere:9411'}}}".into(),
            Some(Err("defaultConfig.tracing.zipkin")),
        ),
    ];
    for (yaml, want) in rows {
        let t = translate(&index(objects()), &opts(&yaml));
        let got = served(&t);
        match (want, got) {
            (None, None) => assert!(t.mesh_warnings.is_empty(), "{yaml}"),
            (Some(Ok((exporter, address))), Some(got)) => {
                assert_eq!(got.exporter, exporter as i32, "{yaml}");
                assert_eq!(got.address, address, "{yaml}");
                assert!(t.mesh_warnings.is_empty(), "{yaml}: {:?}", t.mesh_warnings);
            }
            (Some(Err(part)), Some(got)) => {
                assert_eq!(got.exporter, Exporter::None as i32, "{yaml}");
                assert_eq!(got.address, "", "{yaml}");
                assert_eq!(t.mesh_warnings.len(), 1, "{yaml}");
                assert!(
                    t.mesh_warnings[0].contains(part),
                    "{yaml}: {:?}",
                    t.mesh_warnings
                );
            }
            (want, got) => panic!("{yaml}: want {want:?}, got {got:?}"),
        }
    }
    // The settings are carried.
    let yaml = format!(
        "{}defaultConfig: {{tracing: {{sampling: 25.5}}}}\n",
        select("otel")
    );
    let got = served(&translate(&index(objects()), &opts(&yaml))).expect("tracing");
    assert_eq!(got.sampling, 25.5);
    assert_eq!(got.max_tag_length, 128);
    assert_eq!(got.provider, "otel");
    assert_eq!(got.otlp_http, None, "OTLP/gRPC has no HTTP settings");
    let got = served(&translate(&index(objects()), &opts(&select("otel-http")))).expect("http");
    let http = got.otlp_http.expect("OTLP/HTTP settings");
    assert_eq!((http.path.as_str(), http.timeout_ms), ("/otlp", 3000));
    assert_eq!(
        http.headers,
        [proto::waypoint::tracing::Header {
            name: "x-api-key".into(),
            value: "k1".into()
        }]
    );
}

/// A mesh config change (Zipkin -> OTLP) and the collector's Service appearing are each named
/// as a change of the one resource; a translation that changes neither names nothing.
#[test]
fn a_mesh_config_change_updates_the_resource() {
    let zipkin = format!("{PROVIDERS}defaultProviders: {{tracing: [zipkin]}}\n");
    let mut idx = index(objects());
    let mut tr = Translator::new(opts(&zipkin));
    let changed = |t: &Translation| t.changed[proto::WAYPOINT_TRACING_TYPE_URL].len();
    let first = tr.translate(&idx, &Scope::All);
    assert_eq!(changed(&first), 1);
    assert_eq!(
        served(&first).expect("zipkin").exporter,
        Exporter::Zipkin as i32
    );

    let again = tr.translate(&idx, &Scope::All);
    assert_eq!(changed(&again), 0);

    tr.set_mesh(
        opts(&format!(
            "{PROVIDERS}defaultProviders: {{tracing: [otel]}}\n"
        ))
        .mesh,
    );
    let otlp = tr.translate(&idx, &Scope::All);
    assert_eq!(changed(&otlp), 1);
    let got = served(&otlp).expect("otel");
    assert_eq!(got.exporter, Exporter::OtlpGrpc as i32);
    assert_eq!(got.address, "[fd00::17]:4317");

    // Its Service goes: tracing off, with the warning; it comes back in another translation
    // of its namespace only: on again.
    idx.delete(&key(Kind::Service, "observability", "otel-collector"));
    let gone = tr.translate(
        &idx,
        &Scope::Namespaces(["observability".to_string()].into()),
    );
    assert_eq!(changed(&gone), 1);
    assert_eq!(served(&gone).expect("off").exporter, Exporter::None as i32);
    assert_eq!(gone.mesh_warnings.len(), 1);
    idx.apply(Object::Service(service(
        "observability",
        "otel-collector",
        "10.96.0.17",
        &[],
    )));
    let back = tr.translate(
        &idx,
        &Scope::Namespaces(["observability".to_string()].into()),
    );
    assert_eq!(changed(&back), 1);
    assert_eq!(served(&back).expect("on").address, "10.96.0.17:4317");

    // No tracing any more: the resource is removed.
    tr.set_mesh(MeshConfig::default());
    let none = tr.translate(&idx, &Scope::All);
    assert_eq!(changed(&none), 1);
    assert_eq!(served(&none), None);
}

fn telemetry(ns: &str, name: &str, created: &str, spec: &str) -> Object {
    let mut raw = raw(&format!(
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n\
         metadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"
    ));
    raw.metadata.creation_timestamp = created.into();
    Object::Telemetry(raw)
}

/// Rule 4: a mesh-wide Telemetry chooses the provider and sampling over the mesh config;
/// scoped ones, bad ones and later ones are warned about and not read.
#[test]
fn a_mesh_wide_telemetry_chooses_the_tracing() {
    let mesh = format!(
        "{PROVIDERS}defaultProviders: {{tracing: [zipkin]}}\n\
         defaultConfig: {{tracing: {{sampling: 5}}}}\n"
    );
    let at = |objects: Vec<Object>| {
        let t = translate(
            &index(objects.into_iter().chain(self::objects())),
            &opts(&mesh),
        );
        let served = served(&t).expect("a Tracing resource");
        assert!(t.mesh_warnings.is_empty(), "{:?}", t.mesh_warnings);
        (served, warnings(&t))
    };
    let t1 = "2026-01-01T00:00:00Z";
    let t2 = "2026-02-01T00:00:00Z";
    // (Telemetry objects, exporter, address, sampling, provider, a warning containing)
    type Row = (
        Vec<Object>,
        Exporter,
        &'static str,
        f64,
        &'static str,
        Option<&'static str>,
    );
    let rows: Vec<Row> = vec![
        (
            vec![],
            Exporter::Zipkin,
            "10.96.0.9:9411",
            5.0,
            "zipkin",
            None,
        ),
        (
            vec![telemetry(
                "istio-system",
                "mesh-default",
                t1,
                "{tracing: [{providers: [{name: otel}], randomSamplingPercentage: 42.5}]}",
            )],
            Exporter::OtlpGrpc,
            "[fd00::17]:4317",
            42.5,
            "otel",
            None,
        ),
        (
            // No provider named: the mesh config's; no percentage: its sampling.
            vec![telemetry(
                "istio-system",
                "mesh-default",
                t1,
                "{tracing: [{}]}",
            )],
            Exporter::Zipkin,
            "10.96.0.9:9411",
            5.0,
            "zipkin",
            None,
        ),
        (
            vec![telemetry(
                "istio-system",
                "off",
                t1,
                "{tracing: [{disableSpanReporting: true}]}",
            )],
            Exporter::None,
            "",
            0.0,
            "",
            None,
        ),
        (
            // The oldest of two counts.
            vec![
                telemetry(
                    "istio-system",
                    "b-old",
                    t1,
                    "{tracing: [{randomSamplingPercentage: 7}]}",
                ),
                telemetry(
                    "istio-system",
                    "a-new",
                    t2,
                    "{tracing: [{randomSamplingPercentage: 9}]}",
                ),
            ],
            Exporter::Zipkin,
            "10.96.0.9:9411",
            7.0,
            "zipkin",
            Some("Telemetry istio-system/a-new: Telemetry istio-system/b-old is older and counts"),
        ),
        (
            // The oldest counts whatever it configures, as Istio picks it: here, no tracing.
            vec![
                telemetry("istio-system", "logs", t1, "{accessLogging: [{}]}"),
                telemetry(
                    "istio-system",
                    "traces",
                    t2,
                    "{tracing: [{randomSamplingPercentage: 9}]}",
                ),
            ],
            Exporter::Zipkin,
            "10.96.0.9:9411",
            5.0,
            "zipkin",
            Some("is older and counts"),
        ),
        (
            // An entry for client spans only does not apply to a waypoint's; a null is unset.
            vec![telemetry(
                "istio-system",
                "modes",
                t1,
                "{tracing: [{match: {mode: CLIENT}, randomSamplingPercentage: 1}, \
                 {match: {mode: CLIENT_AND_SERVER}, randomSamplingPercentage: 3, \
                 disableSpanReporting: null}]}",
            )],
            Exporter::Zipkin,
            "10.96.0.9:9411",
            3.0,
            "zipkin",
            None,
        ),
        (
            vec![telemetry(
                "shop",
                "ns-wide",
                t1,
                "{tracing: [{randomSamplingPercentage: 100}]}",
            )],
            Exporter::Zipkin,
            "10.96.0.9:9411",
            5.0,
            "zipkin",
            Some("applies to no waypoint of the mesh now"),
        ),
        (
            vec![telemetry(
                "istio-system",
                "selected",
                t1,
                "{selector: {matchLabels: {app: web}}, tracing: [{randomSamplingPercentage: 100}]}",
            )],
            Exporter::Zipkin,
            "10.96.0.9:9411",
            5.0,
            "zipkin",
            Some("selects no waypoint"),
        ),
        (
            // An unknown provider traces nowhere, as in Istio.
            vec![telemetry(
                "istio-system",
                "unknown",
                t1,
                "{tracing: [{providers: [{name: nope}]}]}",
            )],
            Exporter::None,
            "",
            0.0,
            "",
            Some("provider \"nope\""),
        ),
        (
            // Entries for the server's span override one another in order.
            vec![telemetry(
                "istio-system",
                "folded",
                t1,
                "{tracing: [{providers: [{name: otel}], randomSamplingPercentage: 50}, \
                 {match: {mode: SERVER}, disableSpanReporting: true}]}",
            )],
            Exporter::None,
            "",
            0.0,
            "",
            None,
        ),
        (
            // An empty selector scopes nothing: still mesh-wide.
            vec![telemetry(
                "istio-system",
                "empty-selector",
                t1,
                "{selector: {}, targetRefs: [], tracing: [{randomSamplingPercentage: 11}]}",
            )],
            Exporter::Zipkin,
            "10.96.0.9:9411",
            11.0,
            "zipkin",
            None,
        ),
        (
            vec![telemetry(
                "istio-system",
                "bad",
                t1,
                "{tracing: [{randomSamplingPercentage: 120}]}",
            )],
            Exporter::Zipkin,
            "10.96.0.9:9411",
            5.0,
            "zipkin",
            Some("not a percentage"),
        ),
        (
            // Telemetry about metrics or access logs only: the mesh config's tracing.
            vec![telemetry(
                "istio-system",
                "logs",
                t1,
                "{accessLogging: [{providers: [{name: envoy}]}]}",
            )],
            Exporter::Zipkin,
            "10.96.0.9:9411",
            5.0,
            "zipkin",
            None,
        ),
    ];
    for (i, (objects, exporter, address, sampling, provider, warning)) in
        rows.into_iter().enumerate()
    {
        let (got, warnings) = at(objects);
        assert_eq!(got.exporter, exporter as i32, "row {i}");
        assert_eq!(got.address, address, "row {i}");
        assert_eq!(got.sampling, sampling, "row {i}");
        assert_eq!(got.provider, provider, "row {i}");
        assert_warned(&warnings, warning, i);
    }
}

/// The translation's Telemetry warnings, as `<object>: <warning>`.
fn warnings(t: &Translation) -> Vec<String> {
    t.warnings
        .iter()
        .map(|(k, w)| format!("{k}: {w}"))
        .collect()
}

/// Row `i` warned nothing (`want` none), or something containing `want`.
fn assert_warned(warnings: &[String], want: Option<&str>, i: usize) {
    match want {
        None => assert!(warnings.is_empty(), "row {i}: {warnings:?}"),
        Some(part) => assert!(
            warnings.iter().any(|w| w.contains(part)),
            "row {i}: {warnings:?}"
        ),
    }
}

/// Rule 5: Telemetry merges from the mesh to the waypoint: the namespace's overrides the
/// mesh's, the waypoint's own (targetRefs or its pods' label) overrides both, field by field;
/// other waypoints keep the mesh's.
#[test]
fn a_waypoints_namespace_and_its_own_telemetry_override_the_mesh() {
    let mesh = format!(
        "{PROVIDERS}defaultProviders: {{tracing: [zipkin]}}\n\
         defaultConfig: {{tracing: {{sampling: 5}}}}\n"
    );
    let (t1, t2) = ("2026-01-01T00:00:00Z", "2026-02-01T00:00:00Z");
    let waypoints = || {
        vec![
            namespace("shop", &[]),
            namespace("bank", &[]),
            gateway("shop", "wp", None),
            gateway("shop", "other", None),
            gateway("bank", "wp", None),
        ]
    };
    let root = telemetry(
        "istio-system",
        "mesh",
        t1,
        "{tracing: [{randomSamplingPercentage: 20}]}",
    );
    let shop = telemetry("shop", "ns", t1, "{tracing: [{providers: [{name: otel}]}]}");
    let by_ref = telemetry(
        "shop",
        "wp-ref",
        t1,
        "{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: wp}], \
         tracing: [{randomSamplingPercentage: 80}]}",
    );
    let by_label = telemetry(
        "shop",
        "wp-label",
        t1,
        "{selector: {matchLabels: {gateway.networking.k8s.io/gateway-name: wp}}, \
         tracing: [{disableSpanReporting: true}]}",
    );
    let later_ns = telemetry(
        "shop",
        "ns-later",
        t2,
        "{tracing: [{randomSamplingPercentage: 1}]}",
    );
    // (extra objects, [(waypoint, provider, sampling, off)], a warning containing)
    type Seen = (&'static str, &'static str, &'static str, f64, bool);
    let rows: Vec<(Vec<Object>, Vec<Seen>, Option<&str>)> = vec![
        (
            vec![root.clone()],
            vec![
                ("shop", "wp", "zipkin", 20.0, false),
                ("bank", "wp", "zipkin", 20.0, false),
            ],
            None,
        ),
        (
            // The namespace's provider, the mesh's sampling.
            vec![root.clone(), shop.clone()],
            vec![
                ("shop", "wp", "otel", 20.0, false),
                ("shop", "other", "otel", 20.0, false),
                ("bank", "wp", "zipkin", 20.0, false),
            ],
            None,
        ),
        (
            // No mesh-wide Telemetry: the namespace's, over the mesh config's defaults.
            vec![shop.clone()],
            vec![
                ("shop", "wp", "otel", 5.0, false),
                ("bank", "wp", "zipkin", 5.0, false),
            ],
            None,
        ),
        (
            // The waypoint's own, by targetRefs: its sampling over the namespace's provider.
            vec![root.clone(), shop.clone(), by_ref.clone()],
            vec![
                ("shop", "wp", "otel", 80.0, false),
                ("shop", "other", "otel", 20.0, false),
            ],
            None,
        ),
        (
            // A selector (its pods' label) never scopes a waypoint's, as in Istio.
            vec![root.clone(), by_label.clone()],
            vec![
                ("shop", "wp", "zipkin", 20.0, false),
                ("shop", "other", "zipkin", 20.0, false),
            ],
            Some("Telemetry shop/wp-label: selects no waypoint"),
        ),
        (
            // targetRefs naming its Gateway among others.
            vec![telemetry(
                "shop",
                "mixed",
                t1,
                "{targetRefs: [{kind: Service, group: '', name: api}, {kind: Gateway, \
                 group: gateway.networking.k8s.io, name: wp}], \
                 tracing: [{disableSpanReporting: true}]}",
            )],
            vec![
                ("shop", "wp", "", 0.0, true),
                ("shop", "other", "zipkin", 5.0, false),
            ],
            None,
        ),
        (
            // A bad field at the waypoint's level is skipped; the rest merges.
            vec![
                root.clone(),
                shop.clone(),
                telemetry(
                    "shop",
                    "bad",
                    t1,
                    "{targetRefs: [{kind: Gateway, name: wp}], \
                     tracing: [{randomSamplingPercentage: 400}]}",
                ),
            ],
            vec![("shop", "wp", "otel", 20.0, false)],
            Some("Telemetry shop/bad: randomSamplingPercentage 400"),
        ),
        (
            // Two namespace-wide: the older counts.
            vec![later_ns.clone(), shop.clone()],
            vec![("shop", "wp", "otel", 5.0, false)],
            Some("Telemetry shop/ns-later: Telemetry shop/ns is older and counts"),
        ),
        (
            // For a Gateway that is no waypoint here.
            vec![telemetry(
                "bank",
                "gone",
                t1,
                "{targetRefs: [{kind: Gateway, name: nope}], tracing: [{randomSamplingPercentage: 9}]}",
            )],
            vec![("bank", "wp", "zipkin", 5.0, false)],
            Some("Telemetry bank/gone: applies to no waypoint"),
        ),
    ];
    for (i, (extra, seen, warning)) in rows.into_iter().enumerate() {
        let objects = objects().into_iter().chain(waypoints()).chain(extra);
        let t = translate(&index(objects), &opts(&mesh));
        for (ns, name, provider, sampling, off) in seen {
            let set: BTreeMap<String, Tracing> =
                waypoint_set(&t, ns, name, proto::WAYPOINT_TRACING_TYPE_URL);
            let got = set.into_values().next().expect("a Tracing");
            assert_eq!(
                (
                    got.provider.as_str(),
                    got.sampling,
                    got.exporter == Exporter::None as i32
                ),
                (provider, sampling, off),
                "row {i}: {ns}/{name}"
            );
        }
        assert_warned(&warnings(&t), warning, i);
    }
}

/// The example applies as its comments say.
#[test]
fn the_example_telemetry_chooses_otel_at_25_percent() {
    let example = raw(include_str!("../../../../examples/tracing/telemetry.yaml"));
    let mesh = format!("{PROVIDERS}defaultProviders: {{tracing: [zipkin]}}\n");
    let objects = objects().into_iter().chain([Object::Telemetry(example)]);
    let t = translate(&index(objects), &opts(&mesh));
    let got = served(&t).expect("tracing");
    assert_eq!(got.exporter, Exporter::OtlpGrpc as i32);
    assert_eq!((got.provider.as_str(), got.sampling), ("otel", 25.0));
    assert!(t.mesh_warnings.is_empty(), "{:?}", t.mesh_warnings);
}

/// With no `defaultProviders.tracing` (only the legacy `defaultConfig.tracing.zipkin`), a
/// Telemetry that names no provider turns tracing off: it replaces the legacy setting.
#[test]
fn a_telemetry_without_a_provider_replaces_the_legacy_zipkin() {
    let mesh = "defaultConfig: {tracing: {zipkin: {address: 'zipkin.istio-system:9411'}}}";
    let tel = telemetry(
        "istio-system",
        "mesh",
        "2026-01-01T00:00:00Z",
        "{tracing: [{randomSamplingPercentage: 10}]}",
    );
    let objects = objects().into_iter().chain([tel]);
    let t = translate(&index(objects), &opts(mesh));
    assert_eq!(
        served(&t).expect("a resource").exporter,
        Exporter::None as i32
    );
}
