//! Bad input is a clear `Err` naming the policy and the field, never a panic.

use authz::translate::{self, TranslateError, TranslateOptions};
use authz::{PolicyError, parse_policies};

/// Local config: expect `Invalid` for `policy`, `field`, with `reason` containing `needle`.
fn local_invalid(yaml: &str, policy: &str, field: &str, needle: &str) {
    match parse_policies(yaml) {
        Err(PolicyError::Invalid {
            policy: p,
            field: f,
            reason,
        }) => {
            assert_eq!((p.as_str(), f.as_str()), (policy, field), "{reason}");
            assert!(reason.contains(needle), "{reason:?} lacks {needle:?}");
        }
        other => panic!("want Invalid {policy} {field}, got {other:?}"),
    }
}

fn local_syntax(yaml: &str, needle: &str) {
    match parse_policies(yaml) {
        Err(e @ PolicyError::Syntax(_)) => {
            assert!(e.to_string().contains(needle), "{e} lacks {needle:?}")
        }
        other => panic!("want Syntax error, got {other:?}"),
    }
}

#[test]
fn local_unknown_action_and_scope() {
    local_invalid(
        "- {name: p, namespace: shop, scope: Namespace, action: Permit}",
        "shop/p",
        "action",
        "unknown action \"Permit\"",
    );
    local_invalid(
        "- {name: p, namespace: shop, scope: Cluster, action: Allow}",
        "shop/p",
        "scope",
        "unknown scope \"Cluster\"",
    );
    local_invalid(
        "- {name: p, namespace: shop, scope: Namespace, action: ALLOW}",
        "shop/p",
        "action",
        "expected Allow or Deny",
    );
    local_invalid(
        "- {name: p, namespace: shop, action: Allow}",
        "shop/p",
        "scope",
        "required",
    );
    local_invalid(
        "- {name: p, namespace: shop, scope: Global}",
        "shop/p",
        "action",
        "required",
    );
    local_invalid(
        "- {namespace: shop, scope: Global, action: Allow}",
        "shop/<no name>",
        "name",
        "required",
    );
}

#[test]
fn local_bad_cidr() {
    let yaml = r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - sourceIps: [10.0.0.0/8]
    - - destinationIps: [10.0.0.1/32, 10.0.0.0/33]
"#;
    local_invalid(
        yaml,
        "shop/p",
        "rules[0][1][0].destinationIps[1]",
        "\"10.0.0.0/33\" is not a CIDR",
    );
    local_invalid(
        "- {name: p, namespace: shop, scope: Namespace, action: Deny, rules: [[[{notSourceIps: [not-an-ip]}]]]}",
        "shop/p",
        "rules[0][0][0].notSourceIps[0]",
        "not an IP address",
    );
}

#[test]
fn local_port_out_of_range() {
    let yaml = r#"
- name: p
  namespace: shop
  scope: Namespace
  action: Allow
  rules:
  - - - destinationPorts: [8080, 65536]
"#;
    local_invalid(
        yaml,
        "shop/p",
        "rules[0][0][0].destinationPorts[1]",
        "65536 is not a port",
    );
    local_invalid(
        "- {name: p, namespace: shop, scope: Namespace, action: Allow, rules: [[[{notDestinationPorts: [-1]}]]]}",
        "shop/p",
        "rules[0][0][0].notDestinationPorts[0]",
        "-1 is not a port",
    );
}

#[test]
fn local_bad_string_match_and_service_account() {
    local_invalid(
        "- {name: p, namespace: shop, scope: Namespace, action: Allow, rules: [[[{principals: [!Regex 'a.*']}]]]}",
        "shop/p",
        "rules[0][0][0].principals[0]",
        "unknown string match !Regex",
    );
    local_invalid(
        "- {name: p, namespace: shop, scope: Namespace, action: Allow, rules: [[[{namespaces: [web]}]]]}",
        "shop/p",
        "rules[0][0][0].namespaces[0]",
        "!Exact",
    );
    local_invalid(
        "- {name: p, namespace: shop, scope: Namespace, action: Allow, rules: [[[{serviceAccounts: [{namespace: web}]}]]]}",
        "shop/p",
        "rules[0][0][0].serviceAccounts[0].serviceAccount",
        "required",
    );
}

#[test]
fn local_shape_errors_carry_the_yaml_path() {
    local_syntax(
        "- {name: p, namespace: shop, scope: Namespace, action: Allow, rules: [[[{sourceIp: [10.0.0.1]}]]]}",
        "unknown field `sourceIp`",
    );
    local_syntax(
        "- {name: p, namespace: shop, scope: Namespace, action: Allow, selector: {}}",
        "unknown field `selector`",
    );
    local_syntax("name: p", "");
    local_syntax("- [unclosed", "");
    local_syntax(
        "- {name: p, namespace: shop, scope: Namespace, action: Allow, rules: [[[{destinationPorts: [\"80\"]}]]]}",
        "[0].rules[0][0][0].destinationPorts[0]",
    );
}

#[test]
fn local_duplicate_keys_rejected() {
    local_invalid(
        "- {name: p, namespace: shop, scope: Namespace, action: Allow}\n- {name: p, namespace: shop, scope: Namespace, action: Deny}",
        "shop/p",
        "policies[1]",
        "duplicate",
    );
}

fn crd_invalid(crd: &str, field: &str, needle: &str) {
    match translate::authorization_policy(crd, "istio-system", &TranslateOptions::default()) {
        Err(e @ TranslateError::Invalid { .. }) => {
            let TranslateError::Invalid {
                field: f, reason, ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(f, field, "{e}");
            assert!(reason.contains(needle), "{e} lacks {needle:?}");
        }
        other => panic!("want Invalid at {field}, got {other:?}"),
    }
}

const HEAD: &str = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p, namespace: shop}\n";

#[test]
fn crd_bad_port_names_the_field() {
    let crd = format!(
        "{HEAD}spec:\n  rules:\n  - to:\n    - operation: {{ports: [\"80\"]}}\n    - operation: {{ports: [\"8080\", \"443\", \"99999\"]}}\n"
    );
    let err =
        translate::authorization_policy(crd.as_str(), "istio-system", &TranslateOptions::default())
            .expect_err("bad port");
    assert_eq!(
        err.to_string(),
        r#"AuthorizationPolicy shop/p: spec.rules[0].to[1].operation.ports[2]: "99999" is not a port"#
    );
    crd_invalid(
        &format!("{HEAD}spec:\n  rules:\n  - to:\n    - operation: {{notPorts: [\"http\"]}}\n"),
        "spec.rules[0].to[0].operation.notPorts[0]",
        "\"http\" is not a port",
    );
    crd_invalid(
        &format!(
            "{HEAD}spec:\n  rules:\n  - when:\n    - {{key: destination.port, values: [\"-1\"]}}\n"
        ),
        "spec.rules[0].when[0].values[0]",
        "not a port",
    );
}

#[test]
fn crd_bad_ip_blocks() {
    crd_invalid(
        &format!(
            "{HEAD}spec:\n  rules:\n  - from:\n    - source: {{ipBlocks: [\"10.0.0.0/40\"]}}\n"
        ),
        "spec.rules[0].from[0].source.ipBlocks[0]",
        "not a CIDR",
    );
    crd_invalid(
        &format!(
            "{HEAD}spec:\n  rules:\n  - when:\n    - {{key: source.ip, notValues: [\"10.0.0.300\"]}}\n"
        ),
        "spec.rules[0].when[0].notValues[0]",
        "not an IP address",
    );
}

#[test]
fn crd_bad_fields() {
    crd_invalid(
        &format!("{HEAD}spec: {{action: PERMIT}}\n"),
        "spec.action",
        "unknown action \"PERMIT\"",
    );
    crd_invalid(
        &format!("{HEAD}spec:\n  rules:\n  - from:\n    - source: {{}}\n"),
        "spec.rules[0].from[0].source",
        "must not be empty",
    );
    crd_invalid(
        &format!("{HEAD}spec:\n  rules:\n  - from: []\n"),
        "spec.rules[0].from",
        "must not be empty",
    );
    crd_invalid(
        &format!("{HEAD}spec:\n  rules:\n  - {{}}\n  - to:\n    - {{}}\n"),
        "spec.rules[1].to[0].operation",
        "required",
    );
    crd_invalid(
        &format!("{HEAD}spec:\n  rules:\n  - when:\n    - {{key: source.ip}}\n"),
        "spec.rules[0].when[0]",
        "values or notValues",
    );
    crd_invalid(
        &format!(
            "{HEAD}spec:\n  rules:\n  - from:\n    - source: {{principals: [\"a\"], serviceAccounts: [\"b\"]}}\n"
        ),
        "spec.rules[0].from[0].source.serviceAccounts",
        "cannot be combined",
    );
    crd_invalid(
        &format!(
            "{HEAD}spec:\n  rules:\n  - from:\n    - source: {{serviceAccounts: [\"a/b/c\"]}}\n"
        ),
        "spec.rules[0].from[0].source.serviceAccounts[0]",
        "\"a/b/c\"",
    );
    crd_invalid(
        &format!(
            "{HEAD}spec:\n  rules:\n  - from:\n    - source: {{namespaces: [\"web\", \"\"]}}\n"
        ),
        "spec.rules[0].from[0].source.namespaces[1]",
        "must not be empty",
    );
    crd_invalid(
        &format!(
            "{HEAD}spec:\n  selector: {{matchLabels: {{app: a}}}}\n  targetRefs: [{{kind: Gateway, name: w}}]\n"
        ),
        "spec.selector",
        "targetRef",
    );
    crd_invalid(
        &format!("{HEAD}spec: {{provider: {{name: x}}}}\n"),
        "spec.provider",
        "CUSTOM",
    );
    crd_invalid(
        "kind: AuthorizationPolicy\nmetadata: {name: p}\nspec: {}\n",
        "metadata.namespace",
        "required",
    );
    crd_invalid(
        "kind: PeerAuthentication\nmetadata: {name: p, namespace: shop}\n",
        "kind",
        "expected AuthorizationPolicy",
    );
}

#[test]
fn crd_unknown_spec_field_is_a_syntax_error_with_path() {
    let crd = format!("{HEAD}spec:\n  rules:\n  - from:\n    - source: {{principal: [a]}}\n");
    match translate::authorization_policy(
        crd.as_str(),
        "istio-system",
        &TranslateOptions::default(),
    ) {
        Err(e @ TranslateError::Syntax { .. }) => {
            let text = e.to_string();
            assert!(text.contains("spec.rules[0].from[0].source"), "{text}");
            assert!(text.contains("unknown field `principal`"), "{text}");
        }
        other => panic!("want Syntax, got {other:?}"),
    }
}

fn pa_invalid(pa: &str, field: &str, needle: &str) {
    match translate::peer_authentication(pa) {
        Err(e @ TranslateError::Invalid { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(&format!(": {field}: ")),
                "{text} lacks field {field}"
            );
            assert!(text.contains(needle), "{text} lacks {needle:?}");
        }
        other => panic!("want Invalid at {field}, got {other:?}"),
    }
}

#[test]
fn peer_authentication_bad_fields() {
    const M: &str = "metadata: {name: p, namespace: shop}\n";
    pa_invalid(
        &format!("{M}spec: {{mtls: {{mode: STRIC}}}}"),
        "spec.mtls.mode",
        "unknown mode \"STRIC\"",
    );
    pa_invalid(
        &format!(
            "{M}spec: {{selector: {{matchLabels: {{a: b}}}}, portLevelMtls: {{70000: {{mode: STRICT}}}}}}"
        ),
        "spec.portLevelMtls[70000]",
        "not a port",
    );
    pa_invalid(
        &format!(
            "{M}spec: {{selector: {{matchLabels: {{a: b}}}}, portLevelMtls: {{0: {{mode: STRICT}}}}}}"
        ),
        "spec.portLevelMtls[0]",
        "not a port",
    );
    pa_invalid(
        &format!(
            "{M}spec: {{selector: {{matchLabels: {{a: b}}}}, portLevelMtls: {{80: {{mode: STRICTER}}}}}}"
        ),
        "spec.portLevelMtls[80].mode",
        "unknown mode",
    );
    pa_invalid(
        &format!("{M}spec: {{portLevelMtls: {{80: {{mode: STRICT}}}}}}"),
        "spec.portLevelMtls",
        "selector",
    );
    pa_invalid(
        "metadata: {name: p, namespace: shop, creationTimestamp: yesterday}\n",
        "metadata.creationTimestamp",
        "RFC 3339",
    );
}

/// Odd documents must come back as `Err` (or `Ok`), never panic.
#[test]
fn odd_input_never_panics() {
    let docs = [
        "",
        "~",
        "[]",
        "{}",
        "42",
        "\"text\"",
        "- - - -",
        "!Exact x",
        "[[[[[[]]]]]]",
        "metadata: []",
        "metadata: {name: [a]}",
        "spec: 7",
        "spec: {rules: 7}",
        "spec: {rules: [~]}",
        "spec: {rules: [{from: [~]}]}",
        "spec: {rules: [{when: [~]}]}",
        "- {name: p, namespace: s, scope: Global, action: Allow, rules: [[[{principals: [!Presence {a: 1}]}]]]}",
        "- {name: p, namespace: s, scope: Global, action: Allow, rules: 5}",
        "- {name: p, namespace: s, scope: Global, action: Allow, rules: [[[{sourceIps: [\"::ffff:1.2.3.4/200\"]}]]]}",
        "metadata: {name: p, namespace: s}\nspec: {portLevelMtls: {x: y}, selector: {matchLabels: {a: b}}}",
        "metadata: {name: p, namespace: s}\nspec: {portLevelMtls: {[1]: {}}, selector: {matchLabels: {a: b}}}",
        "\u{0}\u{1}\t- :",
    ];
    for d in docs {
        let _ = parse_policies(d);
        let _ = translate::authorization_policy(d, "istio-system", &TranslateOptions::default());
        let _ = translate::peer_authentication(d);
        let wrapped = format!(
            "metadata: {{name: p, namespace: s}}\nspec:\n  rules:\n  - from:\n    - source: {{ipBlocks: [{d:?}]}}\n"
        );
        let _ = translate::authorization_policy(
            wrapped.as_str(),
            "istio-system",
            &TranslateOptions::default(),
        );
    }
}
