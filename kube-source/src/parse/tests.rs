//! Tests of document parsing: outcomes per document (table), typed fields, policies kept
//! whole, JSON parsing like YAML, and the split of serde_yaml messages.

use super::*;
use crate::objects::IntOrString;

/// One outcome as a line: the key, `skipped ...`, or `error [key] line N: field: message`.
fn summary(outcome: &Result<Parsed, ParseError>) -> String {
    match outcome {
        Ok(Parsed::Object(o)) => o.key().to_string(),
        Ok(Parsed::Skipped {
            api_version,
            kind,
            name,
        }) => format!("skipped {api_version} {kind} {name}"),
        Err(e) => match &e.key {
            Some(key) => format!("error [{key}] {e}"),
            None => format!("error {e}"),
        },
    }
}

fn summaries(doc: &str) -> Vec<String> {
    parse_yaml_document(doc).iter().map(summary).collect()
}

#[test]
fn outcomes() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "namespaced kind without namespace gets default",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n",
            &["Pod default/web"],
        ),
        (
            "namespace kept",
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa, namespace: shop}\n",
            &["ServiceAccount shop/sa"],
        ),
        (
            "cluster-scoped Namespace has no namespace, even if one is written",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  namespace: x\n",
            &["Namespace shop"],
        ),
        (
            "unknown kind is skipped",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n",
            &["skipped apps/v1 Deployment web"],
        ),
        (
            "Istio's own Gateway is not the Gateway API one",
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw\n",
            &["skipped networking.istio.io/v1 Gateway gw"],
        ),
        (
            "Gateway API in any version",
            "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: Gateway\nmetadata:\n  name: w\n",
            &["Gateway default/w"],
        ),
        (
            "a kind without its group is not read",
            "apiVersion: v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\n",
            &["skipped v1 AuthorizationPolicy p"],
        ),
        (
            "only comments",
            "# nothing here\n\n  # still nothing\n",
            &[],
        ),
        (
            "List with mixed items",
            "apiVersion: v1\nkind: List\nitems:\n\
             - apiVersion: v1\n  kind: Pod\n  metadata: {name: a, namespace: shop}\n\
             - apiVersion: apps/v1\n  kind: Deployment\n  metadata: {name: d}\n\
             - apiVersion: v1\n  kind: Service\n  metadata: {name: s}\n",
            &[
                "Pod shop/a",
                "skipped apps/v1 Deployment d",
                "Service default/s",
            ],
        ),
        (
            "PodList items without kind take it from the list",
            "apiVersion: v1\nkind: PodList\nmetadata: {resourceVersion: \"1\"}\nitems:\n\
             - metadata: {name: a}\n- metadata: {name: b}\n",
            &["Pod default/a", "Pod default/b"],
        ),
        (
            "empty List",
            "apiVersion: v1\nkind: List\nitems: []\nmetadata:\n  resourceVersion: \"\"\n",
            &[],
        ),
        (
            "List item without kind in a plain List",
            "apiVersion: v1\nkind: List\nitems:\n- metadata: {name: a}\n",
            &["error items[0].kind: missing field `kind`"],
        ),
        (
            "List inside a List",
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: List\n  items: []\n",
            &["error items[0].kind: a List inside a List is not supported"],
        ),
        (
            "missing name",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  namespace: shop\n",
            &["error metadata.name: missing field `name`"],
        ),
        (
            "empty name",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: \"\"\n",
            &["error metadata.name: missing field `name`"],
        ),
        (
            "missing kind",
            "apiVersion: v1\nmetadata:\n  name: x\n",
            &["error kind: missing field `kind`"],
        ),
        (
            "missing apiVersion",
            "kind: Pod\nmetadata:\n  name: x\n",
            &["error apiVersion: missing field `apiVersion`"],
        ),
        (
            "wrong type deep in spec",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - name: http\n    port: http\n",
            &[
                "error [Service default/web] line 8: spec.ports[0].port: invalid type: string \"http\", expected u16",
            ],
        ),
        (
            "missing required field deep in spec",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - name: http\n    targetPort: 8080\n",
            &["error [Service default/web] line 7: spec.ports[0].port: missing field `port`"],
        ),
        (
            "wrong type in a List item names the item",
            "apiVersion: v1\nkind: List\nitems:\n\
             - apiVersion: v1\n  kind: Pod\n  metadata: {name: a}\n\
             - apiVersion: v1\n  kind: Pod\n  metadata: {name: b}\n  spec:\n    hostNetwork: maybe\n",
            &[
                "Pod default/a",
                "error [Pod default/b] line 11: items[1].spec.hostNetwork: invalid type: string \"maybe\", expected a boolean",
            ],
        ),
        (
            "wrong type in a policy's metadata",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\n  labels: [a]\n",
            &[
                "error [AuthorizationPolicy default/p] line 5: metadata.labels: invalid type: sequence, expected a map",
            ],
        ),
        (
            "YAML syntax error",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: app: web\n",
            &["error line 5: mapping values are not allowed in this context"],
        ),
        (
            "not a mapping",
            "just a string\n",
            &["error line 1: invalid type: string \"just a string\", expected a Kubernetes object"],
        ),
        (
            "a second document hidden behind `--- text`",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n--- !foo\nb: 1\n",
            &["error deserializing from YAML containing more than one document is not supported"],
        ),
    ];
    for (name, doc, want) in cases {
        assert_eq!(summaries(doc), *want, "{name}");
    }
}

/// A List whose items all decode is read once, however long (`kubectl get pods -o yaml` of a
/// busy namespace). Only a broken List is read again item by item, to tell its good items
/// from its bad ones; a List of a few thousand pods took minutes that way (seen while fuzzing
/// `manifest_document`), so past the budget a broken List is its first error alone.
#[test]
fn long_lists() {
    let mut doc = String::from("apiVersion: v1\nkind: PodList\nitems:\n");
    for i in 0..3000 {
        doc.push_str(&format!("- metadata: {{name: p{i}, namespace: shop}}\n"));
    }
    assert!(3000 * doc.len() > LIST_REREAD_BUDGET);
    let outcomes = summaries(&doc);
    assert_eq!(outcomes.len(), 3000);
    assert_eq!(outcomes[0], "Pod shop/p0");
    assert_eq!(outcomes[2999], "Pod shop/p2999");

    let broken = doc.replace(
        "- metadata: {name: p1500, namespace: shop}",
        "- metadata: {name: p1500, namespace: shop}\n  spec: {nodeName: [1]}",
    );
    assert_eq!(
        summaries(&broken),
        [format!(
            "error line 1505: items[1500].spec.nodeName: invalid type: sequence, expected a \
             string; this List of 3000 objects in {} bytes is too large to locate every error \
             item by item, so none of its objects is applied: fix this one, or split it into \
             one document per object (separated by `---` lines)",
            broken.len()
        )]
    );

    // Under the budget, the good items of a broken List still come through.
    let short = "apiVersion: v1\nkind: PodList\nitems:\n\
                 - metadata: {name: p0, namespace: shop}\n\
                 - metadata: {name: p1, namespace: shop}\n  spec: {nodeName: [1]}\n\
                 - metadata: {name: p2, namespace: shop}\n";
    assert_eq!(
        summaries(short),
        [
            "Pod shop/p0",
            "error [Pod shop/p1] line 6: items[1].spec.nodeName: invalid type: sequence, \
             expected a string",
            "Pod shop/p2",
        ],
        "{short}"
    );

    // Kinds the mesh does not read are not decoded.
    let skipped = doc.replace("kind: PodList", "kind: List").replace(
        "- metadata",
        "- apiVersion: apps/v1\n  kind: Deployment\n  metadata",
    );
    let outcomes = summaries(&skipped);
    assert_eq!(outcomes.len(), 3000);
    assert_eq!(outcomes[0], "skipped apps/v1 Deployment p0");
}

#[test]
fn typed_fields() {
    let doc = "\
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports:
  - name: http
    port: 80
    targetPort: http
  - port: 9090
    targetPort: 9091
";
    let outcomes = parse_yaml_document(doc);
    let [Ok(Parsed::Object(Object::Service(svc)))] = outcomes.as_slice() else {
        panic!("not one service: {:?}", summaries(doc));
    };
    assert_eq!(svc.vips(), ["10.96.0.10"]);
    let targets: Vec<_> = svc
        .spec
        .ports
        .iter()
        .map(|p| p.target_port.clone())
        .collect();
    assert_eq!(
        targets,
        [
            Some(IntOrString::String("http".into())),
            Some(IntOrString::Int(9091))
        ]
    );
}

#[test]
fn policy_kept_whole_with_defaulted_namespace() {
    let doc = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-frontend
spec:
  action: ALLOW
  rules:
  - from:
    - source: {principals: [cluster.local/ns/shop/sa/frontend]}
";
    let outcomes = parse_yaml_document(doc);
    let [Ok(Parsed::Object(Object::AuthorizationPolicy(p)))] = outcomes.as_slice() else {
        panic!("not one policy: {:?}", summaries(doc));
    };
    assert_eq!(p.metadata.namespace, "default");
    assert_eq!(p.value["metadata"]["namespace"], "default");
    assert_eq!(p.value["spec"]["action"], "ALLOW");
}

/// The same objects as JSON (what the API server sends) parse to the same values.
#[test]
fn json_parses_like_yaml() {
    let cases = [
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  nodeName: n1\n\
         status:\n  podIPs:\n  - ip: 10.244.0.5\n",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: strict\n\
         spec:\n  mtls: {mode: STRICT}\n  portLevelMtls: {\"8080\": {mode: DISABLE}}\n",
        "apiVersion: v1\nkind: PodList\nitems:\n- metadata: {name: a}\n- metadata: {name: b, namespace: x}\n",
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: web\n",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  namespace: x\n",
    ];
    for yaml in cases {
        let json: serde_json::Value = serde_yaml::from_str(yaml).expect("test YAML parses");
        assert_eq!(
            parse_json_object(&json),
            parse_yaml_document(yaml),
            "{yaml}"
        );
    }
}

/// The one difference: a manifest's Deployments are skipped (the apps'), the cluster's read
/// (the cluster source lists only meshd's own, by label).
#[test]
fn deployments_are_read_from_the_cluster_only() {
    let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: wp\n  namespace: shop\n";
    let json: serde_json::Value = serde_yaml::from_str(yaml).expect("test YAML parses");
    assert!(
        matches!(
            parse_yaml_document(yaml).as_slice(),
            [Ok(Parsed::Skipped { .. })]
        ),
        "{:?}",
        parse_yaml_document(yaml)
    );
    match parse_json_object(&json).as_slice() {
        [Ok(Parsed::Object(object))] => {
            assert_eq!(object.key().to_string(), "Deployment shop/wp");
        }
        other => panic!("{other:?}"),
    }
}

/// JSON errors have no line, and serde_json gives no field path for typed fields.
#[test]
fn json_errors() {
    let json = serde_json::json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"ports": [{"port": "http"}]}
    });
    let outcomes = parse_json_object(&json);
    let [Err(e)] = outcomes.as_slice() else {
        panic!("not one error: {outcomes:?}");
    };
    assert_eq!(e.line, None);
    assert_eq!(
        e.key.as_ref().map(ToString::to_string).as_deref(),
        Some("Service default/web")
    );
    assert_eq!(e.message, "invalid type: string \"http\", expected u16");
}

#[test]
fn messages_split_into_field_and_message() {
    let cases = [
        (
            "spec.ports[0].port: invalid type: string \"http\", expected u16 at line 8 column 11",
            Some("spec.ports[0].port"),
            "invalid type: string \"http\", expected u16",
        ),
        (
            "invalid type: string \"x\", expected a Kubernetes object at line 1 column 1",
            None,
            "invalid type: string \"x\", expected a Kubernetes object",
        ),
        (
            "spec: missing field `port` at line 3 column 5",
            Some("spec.port"),
            "missing field `port`",
        ),
        ("missing field `kind`", Some("kind"), "missing field `kind`"),
        (
            "mapping values are not allowed in this context at line 5 column 15",
            None,
            "mapping values are not allowed in this context",
        ),
        (
            "did not find expected key at line 4 column 3, while parsing a block mapping at line 1 column 1",
            None,
            "did not find expected key, while parsing a block mapping",
        ),
        (
            "found unexpected end of stream at position 12",
            None,
            "found unexpected end of stream",
        ),
        (
            "a value \"at line 3\" stays at line x",
            None,
            "a value \"at line 3\" stays at line x",
        ),
    ];
    for (raw, field, message) in cases {
        let (f, m) = split_message(raw);
        assert_eq!((f.as_deref(), m.as_str()), (field, message), "{raw}");
    }
}
