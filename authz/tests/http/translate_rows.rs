//! AuthorizationPolicy → HttpPolicy: action, dry run, attachment, errors (naming the field)
//! and warnings. Root namespace `istio-system`.

use authz::http::HttpAction;
use authz::translate::{
    Attachment, HttpTranslated, Target, TranslateError, http_authorization_policy,
};

use crate::ROOT;
use crate::action_rows::{PAYMENTS, SCANNERS};

pub struct TrRow {
    pub name: &'static str,
    pub crd: &'static str,
    /// `ACTION[ PROVIDER][ dry-run] -> ATTACHMENT`, the attachment being `global`,
    /// `namespace`, `selector k=v,…` or targets joined by `, ` (`Gateway ns/name`,
    /// `Service ns/name`, `ServiceEntry ns/name`, `GatewayClass`); or `error FIELD: TEXT`
    /// where the reason must contain TEXT; or `syntax TEXT`.
    pub want: &'static str,
    /// A substring some warning must contain (`""`: no warnings at all).
    pub warning: &'static str,
}

const TR: TrRow = TrRow {
    name: "",
    crd: "",
    want: "",
    warning: "",
};

fn summary(t: &HttpTranslated) -> String {
    let action = match &t.policy.action {
        HttpAction::Allow => "ALLOW".to_string(),
        HttpAction::Deny => "DENY".to_string(),
        HttpAction::Audit => "AUDIT".to_string(),
        HttpAction::Custom { provider } => format!("CUSTOM {provider}"),
    };
    let dry = if t.policy.dry_run { " dry-run" } else { "" };
    let attachment = match &t.attachment {
        Attachment::Global => "global".to_string(),
        Attachment::Namespace => "namespace".to_string(),
        Attachment::Selector(labels) => {
            let kv: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("selector {}", kv.join(","))
        }
        Attachment::Targets(targets) => targets
            .iter()
            .map(|t| match t {
                Target::Gateway { namespace, name } => format!("Gateway {namespace}/{name}"),
                Target::Service { namespace, name } => format!("Service {namespace}/{name}"),
                Target::ServiceEntry { namespace, name } => {
                    format!("ServiceEntry {namespace}/{name}")
                }
                Target::GatewayClass => "GatewayClass".to_string(),
            })
            .collect::<Vec<_>>()
            .join(", "),
    };
    format!("{action}{dry} -> {attachment}")
}

fn check(row: &TrRow) -> Result<(), String> {
    let result = http_authorization_policy(row.crd, ROOT);
    if let Some(want) = row.want.strip_prefix("error ") {
        let (field, text) = want.split_once(": ").expect("error FIELD: TEXT");
        return match result {
            Err(TranslateError::Invalid {
                field: f, reason, ..
            }) if f == field && reason.contains(text) => Ok(()),
            other => Err(format!("want error {field}: …{text}…, got {other:?}")),
        };
    }
    if let Some(text) = row.want.strip_prefix("syntax ") {
        return match result {
            Err(e @ TranslateError::Syntax { .. }) if e.to_string().contains(text) => Ok(()),
            other => Err(format!("want syntax error …{text}…, got {other:?}")),
        };
    }
    let t = result.map_err(|e| format!("want `{}`, got error {e}", row.want))?;
    if summary(&t) != row.want {
        return Err(format!("got `{}`, want `{}`", summary(&t), row.want));
    }
    crate::common::check_warnings(&t.warnings, row.warning)
}

#[test]
fn http_translation_table() {
    assert!(crate::common::check_rows(ROWS, |r| r.name, check) >= 50);
}

#[test]
fn yaml_value_input_translates_like_text() {
    // Syntax errors name a line and column, which differ once the value is written out again.
    for row in ROWS.iter().filter(|r| !r.want.starts_with("syntax ")) {
        crate::common::assert_value_input_agrees(row.name, row.crd, |input| {
            http_authorization_policy(input, ROOT)
        });
    }
}

/// The config-dump shape: camelCase, empty fields left out, contains as `{"Contains": …}`.
#[test]
fn translated_policies_serialize_for_config_dumps() {
    let t = http_authorization_policy(
        r#"
metadata: {name: p, namespace: shop}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  action: DENY
  rules:
  - from: [{source: {notPrincipals: ["*"], remoteIpBlocks: [203.0.113.0/24]}}]
    to: [{operation: {hosts: ["*.example.com"], ports: ["8080"], paths: ["/api*"]}}]
    when:
    - {key: "request.headers[User-Agent]", values: ["*sqlmap*"]}
    - {key: destination.port, notValues: ["9090"]}
"#,
        ROOT,
    )
    .unwrap();
    let got = serde_json::to_value(&t).unwrap();
    let want = serde_json::json!({
        "policy": {
            "name": "p",
            "namespace": "shop",
            "action": "Deny",
            "dryRun": false,
            "rules": [{
                "from": [{"notPrincipals": ["Presence"], "remoteIpBlocks": ["203.0.113.0/24"]}],
                "to": [{
                    "hosts": [{"Suffix": ".example.com"}],
                    "ports": [8080],
                    "paths": [{"Prefix": "/api"}],
                }],
                "when": [
                    {"key": "request.headers[user-agent]", "values": [{"Contains": "sqlmap"}]},
                    {"key": "destination.port", "notValues": [9090]},
                ],
            }],
        },
        "attachment": {"Targets": [{"Gateway": {"namespace": "shop", "name": "waypoint"}}]},
        "warnings": [
            "spec.rules[0].when[0].values[0]: \"*sqlmap*\" is read as contains \"sqlmap\" (an extension: Istio reads it as the suffix \"sqlmap*\")",
        ],
    });
    assert_eq!(got, want);
    let custom = http_authorization_policy(
        "metadata: {name: e, namespace: shop}\nspec: {action: CUSTOM, provider: {name: opa}}\n",
        ROOT,
    )
    .unwrap();
    assert_eq!(
        serde_json::to_value(&custom.policy.action).unwrap(),
        serde_json::json!({"Custom": {"provider": "opa"}})
    );
}

#[test]
fn seed_policies_attach_and_warn() {
    let payments = http_authorization_policy(PAYMENTS, ROOT).unwrap();
    assert_eq!(summary(&payments), "ALLOW -> Service shop/payments");
    assert!(payments.warnings.is_empty(), "{:?}", payments.warnings);
    let scanners = http_authorization_policy(SCANNERS, ROOT).unwrap();
    assert_eq!(summary(&scanners), "DENY -> global");
    let contains: Vec<&String> = scanners
        .warnings
        .iter()
        .filter(|w| w.contains("is read as contains"))
        .collect();
    assert_eq!(contains.len(), 3, "{:?}", scanners.warnings);
}

pub const ROWS: &[TrRow] = &[
    // --- attachment -----------------------------------------------------------------------
    TrRow {
        name: "targetRefs Gateway",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]\n  rules: [{}]\n",
        want: "ALLOW -> Gateway shop/waypoint",
        ..TR
    },
    TrRow {
        name: "targetRef Service with the core group",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  targetRef: {kind: Service, group: \"\", name: cart}\n  action: DENY\n  rules: [{}]\n",
        want: "DENY -> Service shop/cart",
        ..TR
    },
    TrRow {
        name: "Service without a group, and group core",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  targetRefs: [{kind: Service, name: cart}, {kind: Service, group: core, name: api}]\n",
        want: "ALLOW -> Service shop/cart, Service shop/api",
        ..TR
    },
    TrRow {
        name: "targetRefs ServiceEntry",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  targetRefs: [{kind: ServiceEntry, group: networking.istio.io, name: ext-api}]\n",
        want: "ALLOW -> ServiceEntry shop/ext-api",
        ..TR
    },
    TrRow {
        name: "GatewayClass istio-waypoint in the root namespace",
        crd: "metadata: {name: p, namespace: istio-system}\nspec:\n  targetRefs: [{kind: GatewayClass, group: gateway.networking.k8s.io, name: istio-waypoint}]\n  action: DENY\n  rules: [{}]\n",
        want: "DENY -> GatewayClass",
        ..TR
    },
    TrRow {
        name: "several targetRefs keep their order",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  targetRefs:\n  - {kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}\n  - {kind: Service, name: cart, namespace: shop}\n",
        want: "ALLOW -> Gateway shop/waypoint, Service shop/cart",
        ..TR
    },
    TrRow {
        name: "an empty targetRefs list falls back to the namespace",
        crd: "metadata: {name: p, namespace: shop}\nspec: {targetRefs: []}\n",
        want: "ALLOW -> namespace",
        ..TR
    },
    TrRow {
        name: "selector",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  selector: {matchLabels: {app: cart, version: v1}}\n",
        want: "ALLOW -> selector app=cart,version=v1",
        ..TR
    },
    TrRow {
        name: "a selector without labels warns",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  selector: {}\n",
        want: "ALLOW -> selector ",
        warning: "selects every workload",
    },
    TrRow {
        name: "no selector outside the root namespace",
        crd: "metadata: {name: p, namespace: shop}\nspec: {rules: [{}]}\n",
        want: "ALLOW -> namespace",
        ..TR
    },
    TrRow {
        name: "no selector in the root namespace",
        crd: "metadata: {name: p, namespace: istio-system}\nspec: {rules: [{}]}\n",
        want: "ALLOW -> global",
        ..TR
    },
    TrRow {
        name: "GatewayClass outside the root namespace is rejected",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  targetRefs: [{kind: GatewayClass, group: gateway.networking.k8s.io, name: istio-waypoint}]\n",
        want: "error spec.targetRefs[0]: only allowed in the root namespace",
        ..TR
    },
    TrRow {
        name: "a GatewayClass other than istio-waypoint is rejected",
        crd: "metadata: {name: p, namespace: istio-system}\nspec:\n  targetRefs: [{kind: GatewayClass, group: gateway.networking.k8s.io, name: istio}]\n",
        want: "error spec.targetRefs[0].name: only istio-waypoint",
        ..TR
    },
    TrRow {
        name: "an unsupported kind is rejected",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  targetRefs: [{kind: Pod, name: x}]\n",
        want: "error spec.targetRefs[0].kind: unsupported kind \"Pod\"",
        ..TR
    },
    TrRow {
        name: "a Gateway of another group is rejected",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  targetRefs: [{kind: Gateway, group: networking.istio.io, name: gw}]\n",
        want: "error spec.targetRefs[0].group: is not the group of Gateway",
        ..TR
    },
    TrRow {
        name: "a ServiceEntry of the core group is rejected",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  targetRefs: [{kind: ServiceEntry, name: se}]\n",
        want: "error spec.targetRefs[0].group: networking.istio.io",
        ..TR
    },
    TrRow {
        name: "a Service of a foreign group is rejected",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  targetRef: {kind: Service, group: apps, name: cart}\n",
        want: "error spec.targetRef.group: is not the group of Service",
        ..TR
    },
    TrRow {
        name: "a cross-namespace targetRef is rejected",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  targetRefs: [{kind: Service, name: cart, namespace: web}]\n",
        want: "error spec.targetRefs[0].namespace: cross-namespace",
        ..TR
    },
    TrRow {
        name: "a targetRef needs a name",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  targetRefs: [{kind: Service}]\n",
        want: "error spec.targetRefs[0].name: required",
        ..TR
    },
    TrRow {
        name: "a targetRef needs a kind",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  targetRefs: [{name: cart}]\n",
        want: "error spec.targetRefs[0].kind: required",
        ..TR
    },
    TrRow {
        name: "unknown targetRef fields are rejected",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  targetRefs: [{kind: Service, name: cart, port: 80}]\n",
        want: "error spec.targetRefs[0]: unknown field `port`",
        ..TR
    },
    TrRow {
        name: "selector and targetRefs exclude each other",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  selector: {matchLabels: {app: cart}}\n  targetRefs: [{kind: Service, name: cart}]\n",
        want: "error spec.selector: cannot be set together",
        ..TR
    },
    TrRow {
        name: "targetRef and targetRefs exclude each other",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  targetRef: {kind: Service, name: a}\n  targetRefs: [{kind: Service, name: b}]\n",
        want: "error spec.targetRef: cannot be set together with targetRefs",
        ..TR
    },
    // --- action, provider, dry run --------------------------------------------------------
    TrRow {
        name: "CUSTOM with its provider",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]\n  action: CUSTOM\n  provider: {name: opa}\n  rules: [{to: [{operation: {paths: [\"/admin/*\"]}}]}]\n",
        want: "CUSTOM opa -> Gateway shop/waypoint",
        ..TR
    },
    TrRow {
        name: "CUSTOM without a provider is rejected",
        crd: "metadata: {name: p, namespace: shop}\nspec: {action: CUSTOM, rules: [{}]}\n",
        want: "error spec.provider.name: required with action CUSTOM",
        ..TR
    },
    TrRow {
        name: "CUSTOM with a provider without a name is rejected",
        crd: "metadata: {name: p, namespace: shop}\nspec: {action: CUSTOM, provider: {}, rules: [{}]}\n",
        want: "error spec.provider.name: required with action CUSTOM",
        ..TR
    },
    TrRow {
        name: "unknown provider fields are rejected",
        crd: "metadata: {name: p, namespace: shop}\nspec: {action: CUSTOM, provider: {name: opa, url: x}, rules: [{}]}\n",
        want: "error spec.provider: unknown field `url`",
        ..TR
    },
    TrRow {
        name: "a provider with ALLOW is rejected",
        crd: "metadata: {name: p, namespace: shop}\nspec: {provider: {name: opa}, rules: [{}]}\n",
        want: "error spec.provider: only allowed with action CUSTOM",
        ..TR
    },
    TrRow {
        name: "AUDIT",
        crd: "metadata: {name: p, namespace: shop}\nspec: {action: AUDIT, rules: [{}]}\n",
        want: "AUDIT -> namespace",
        ..TR
    },
    TrRow {
        name: "an unknown action is rejected",
        crd: "metadata: {name: p, namespace: shop}\nspec: {action: PERMIT}\n",
        want: "error spec.action: unknown action \"PERMIT\"",
        ..TR
    },
    TrRow {
        name: "the dry-run annotation",
        crd: "metadata: {name: p, namespace: shop, annotations: {istio.io/dry-run: \"true\"}}\nspec: {action: DENY, rules: [{}]}\n",
        want: "DENY dry-run -> namespace",
        ..TR
    },
    TrRow {
        name: "a dry-run annotation that is not a boolean warns and enforces",
        crd: "metadata: {name: p, namespace: shop, annotations: {istio.io/dry-run: \"yes\"}}\nspec: {action: DENY, rules: [{}]}\n",
        want: "DENY -> namespace",
        warning: "is not a boolean; treated as false",
    },
    TrRow {
        name: "dry-run on CUSTOM warns",
        crd: "metadata: {name: p, namespace: shop, annotations: {istio.io/dry-run: \"true\"}}\nspec: {action: CUSTOM, provider: {name: opa}, rules: [{}]}\n",
        want: "CUSTOM opa dry-run -> namespace",
        warning: "applies to ALLOW and DENY only; this CUSTOM policy is neither enforced nor reported",
    },
    TrRow {
        name: "a DENY without rules warns",
        crd: "metadata: {name: p, namespace: shop}\nspec: {action: DENY}\n",
        want: "DENY -> namespace",
        warning: "DENY policy without rules never matches",
    },
    TrRow {
        name: "an ALLOW without rules is allow-nothing, no warning",
        crd: "metadata: {name: p, namespace: shop}\nspec: {}\n",
        want: "ALLOW -> namespace",
        ..TR
    },
    TrRow {
        name: "contains values warn with their field",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  rules: [{to: [{operation: {paths: [\"*/admin/*\"]}}]}]\n",
        want: "ALLOW -> namespace",
        warning: "spec.rules[0].to[0].operation.paths[0]: \"*/admin/*\" is read as contains \"/admin/\"",
    },
    // --- validation -----------------------------------------------------------------------
    TrRow {
        name: "a bad CIDR in ipBlocks",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  rules: [{from: [{source: {ipBlocks: [10.0.0.0/33]}}]}]\n",
        want: "error spec.rules[0].from[0].source.ipBlocks[0]: is not a CIDR",
        ..TR
    },
    TrRow {
        name: "a bad address in notRemoteIpBlocks",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  rules: [{from: [{source: {notRemoteIpBlocks: [10.0.0.300]}}]}]\n",
        want: "error spec.rules[0].from[0].source.notRemoteIpBlocks[0]: is not an IP address",
        ..TR
    },
    TrRow {
        name: "a bad CIDR in a remote.ip condition",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  rules: [{when: [{key: remote.ip, notValues: [nope]}]}]\n",
        want: "error spec.rules[0].when[0].notValues[0]: is not an IP address",
        ..TR
    },
    TrRow {
        name: "a named port is rejected",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  rules: [{to: [{operation: {ports: [http]}}]}]\n",
        want: "error spec.rules[0].to[0].operation.ports[0]: \"http\" is not a port",
        ..TR
    },
    TrRow {
        name: "a port above 65535 is rejected",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  rules: [{to: [{operation: {notPorts: [\"80\", \"65536\"]}}]}]\n",
        want: "error spec.rules[0].to[0].operation.notPorts[1]: \"65536\" is not a port",
        ..TR
    },
    TrRow {
        name: "a bad destination.port value",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  rules: [{when: [{key: destination.port, values: [\"-1\"]}]}]\n",
        want: "error spec.rules[0].when[0].values[0]: is not a port",
        ..TR
    },
    TrRow {
        name: "an empty source",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  rules: [{from: [{source: {}}]}]\n",
        want: "error spec.rules[0].from[0].source: must not be empty",
        ..TR
    },
    TrRow {
        name: "a from entry without a source",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  rules: [{from: [{}]}]\n",
        want: "error spec.rules[0].from[0].source: required",
        ..TR
    },
    TrRow {
        name: "an empty from list",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  rules: [{from: []}]\n",
        want: "error spec.rules[0].from: must not be empty",
        ..TR
    },
    TrRow {
        name: "an empty operation",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  rules: [{to: [{operation: {}}]}]\n",
        want: "error spec.rules[0].to[0].operation: must not be empty",
        ..TR
    },
    TrRow {
        name: "an empty string in paths",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  rules: [{to: [{operation: {paths: [\"/a\", \"\"]}}]}]\n",
        want: "error spec.rules[0].to[0].operation.paths[1]: must not be empty",
        ..TR
    },
    TrRow {
        name: "an unknown when key names the key",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  rules: [{when: [{key: request.user, values: [x]}]}]\n",
        want: "error spec.rules[0].when[0].key: \"request.user\": unknown condition key",
        ..TR
    },
    TrRow {
        name: "Envoy filter metadata keys are not available",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  rules: [{when: [{key: \"experimental.envoy.filters.network.mysql_proxy[db.table]\", values: [x]}]}]\n",
        want: "error spec.rules[0].when[0].key: not available at this waypoint",
        ..TR
    },
    TrRow {
        name: "a header key without a name",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  rules: [{when: [{key: \"request.headers[]\", values: [x]}]}]\n",
        want: "error spec.rules[0].when[0].key: expected request.headers[<name>]",
        ..TR
    },
    TrRow {
        name: "a claim key with an empty segment",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  rules: [{when: [{key: \"request.auth.claims[a][]\", values: [x]}]}]\n",
        want: "error spec.rules[0].when[0].key: expected request.auth.claims",
        ..TR
    },
    TrRow {
        name: "a condition without values or notValues",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  rules: [{when: [{key: source.ip}]}]\n",
        want: "error spec.rules[0].when[0]: at least one of values or notValues",
        ..TR
    },
    TrRow {
        name: "serviceAccounts with principals",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  rules: [{from: [{source: {serviceAccounts: [a], principals: [b]}}]}]\n",
        want: "error spec.rules[0].from[0].source.serviceAccounts: cannot be combined",
        ..TR
    },
    TrRow {
        name: "a null rule",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  rules: [{}, null]\n",
        want: "error spec.rules[1]: must not be null",
        ..TR
    },
    TrRow {
        name: "an unknown operation field is a syntax error",
        crd: "metadata: {name: p, namespace: shop}\nspec:\n  rules: [{to: [{operation: {path: [/a]}}]}]\n",
        want: "syntax unknown field `path`",
        ..TR
    },
    TrRow {
        name: "a policy of another kind is rejected",
        crd: "kind: PeerAuthentication\nmetadata: {name: p, namespace: shop}\nspec: {}\n",
        want: "error kind: expected AuthorizationPolicy",
        ..TR
    },
];
