//! CRD translation tables: AuthorizationPolicy → Authorization (compared with the expected
//! policy written in local-config YAML, then evaluated), and PeerAuthentication → effective
//! mode, attached keys and the verdict for plaintext and mTLS connections.

mod authorization_rows;
#[path = "../common/mod.rs"]
mod common;
mod peer_rows;
mod special_rows;

use std::collections::BTreeMap;

use authz::translate::{
    self, Labels, MtlsMode, SkipReason, TranslateOptions, effective_mtls,
    peer_authentication_policies,
};
use authz::{PolicyStore, parse_policies};
use common::{connection, verdict_text};

pub const ROOT: &str = "istio-system";

pub struct ApRow {
    pub name: &'static str,
    pub crd: &'static str,
    pub enable_dry_run: bool,
    /// The expected Authorization as a local-config list of one, or `skip: targetRefs`,
    /// `skip: action CUSTOM`, `skip: dry-run`.
    pub want: &'static str,
    /// Expected `selector` labels (`None`: no selector).
    pub selector: Option<&'static [(&'static str, &'static str)]>,
    /// A substring every warning list must contain (`""`: no warnings at all).
    pub warning: &'static str,
    /// Connections to a workload in `shop` labelled `app: cart`, and the expected verdict.
    pub verdicts: &'static [(&'static str, &'static str)],
}

pub const AP: ApRow = ApRow {
    name: "",
    crd: "",
    enable_dry_run: false,
    want: "",
    selector: None,
    warning: "",
    verdicts: &[],
};

fn labels(kv: &[(&str, &str)]) -> Labels {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn check_ap(row: &ApRow) -> Result<(), String> {
    let opts = TranslateOptions {
        enable_dry_run: row.enable_dry_run,
    };
    let t = translate::authorization_policy(row.crd, ROOT, &opts).map_err(|e| e.to_string())?;
    match (row.want.strip_prefix("skip: "), &t.policy, &t.skipped) {
        (Some(reason), None, Some(skipped)) => {
            let got = match skipped {
                SkipReason::TargetRefs => "targetRefs".to_string(),
                SkipReason::UnsupportedAction(a) => format!("action {a}"),
                SkipReason::DryRunNotEnabled => "dry-run".to_string(),
            };
            if got != reason {
                return Err(format!("skipped for {got}, want {reason}"));
            }
        }
        (None, Some(policy), None) => {
            let want = parse_policies(row.want).map_err(|e| format!("bad want: {e}"))?;
            if want.as_slice() != std::slice::from_ref(policy) {
                return Err(format!("policy\n got {policy:?}\nwant {want:?}"));
            }
        }
        _ => return Err(format!("want {}, got {t:?}", row.want)),
    }
    let want_selector = row.selector.map(labels);
    if t.selector != want_selector {
        return Err(format!("selector {:?}, want {want_selector:?}", t.selector));
    }
    common::check_warnings(&t.warnings, row.warning)?;
    let store: PolicyStore = t.policy.clone().into_iter().collect();
    let keys = if t.selects(ROOT, "shop", &labels(&[("app", "cart")])) {
        vec![t.key()]
    } else {
        Vec::new()
    };
    for (conn, want) in row.verdicts {
        let got = verdict_text(&store.evaluate("shop", &keys, &connection(conn)));
        if got != *want {
            return Err(format!("{conn}: got `{got}`, want `{want}`"));
        }
    }
    Ok(())
}

#[test]
fn authorization_policy_table() {
    let rows = authorization_rows::ROWS.iter().chain(special_rows::ROWS);
    assert!(common::check_rows(rows, |r| r.name, check_ap) >= 25);
}

pub struct PaRow {
    pub name: &'static str,
    /// PeerAuthentication objects separated by `---`.
    pub pas: &'static str,
    pub namespace: &'static str,
    pub labels: &'static [(&'static str, &'static str)],
    /// Effective mode for unlisted ports: STRICT, PERMISSIVE or DISABLE.
    pub mode: &'static str,
    pub ports: &'static [(u16, &'static str)],
    pub keys: &'static [&'static str],
    /// Whether plaintext is accepted on each port (mTLS always is).
    pub plaintext: &'static [(u16, bool)],
}

pub const PA: PaRow = PaRow {
    name: "",
    pas: "",
    namespace: "shop",
    labels: &[("app", "cart")],
    mode: "",
    ports: &[],
    keys: &[],
    plaintext: &[],
};

fn mode_name(m: MtlsMode) -> &'static str {
    match m {
        MtlsMode::Unset => "UNSET",
        MtlsMode::Disable => "DISABLE",
        MtlsMode::Permissive => "PERMISSIVE",
        MtlsMode::Strict => "STRICT",
    }
}

pub fn parse_pas(docs: &str) -> Vec<translate::PeerAuthentication> {
    docs.split("\n---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| translate::peer_authentication(d).expect("valid PeerAuthentication"))
        .collect()
}

fn check_pa(row: &PaRow) -> Result<(), String> {
    let all = parse_pas(row.pas);
    let wm = effective_mtls(&all, ROOT, row.namespace, &labels(row.labels));
    if mode_name(wm.mode) != row.mode {
        return Err(format!("mode {:?}, want {}", wm.mode, row.mode));
    }
    let ports: BTreeMap<u16, &str> = wm.ports.iter().map(|(p, m)| (*p, mode_name(*m))).collect();
    let want_ports: BTreeMap<u16, &str> = row.ports.iter().copied().collect();
    if ports != want_ports {
        return Err(format!("ports {ports:?}, want {want_ports:?}"));
    }
    if wm.policy_keys != row.keys {
        return Err(format!("keys {:?}, want {:?}", wm.policy_keys, row.keys));
    }
    // What ztunnel sees: every published policy, and the workload's keys.
    let published = peer_authentication_policies(&all, ROOT);
    for p in &wm.policies {
        if !published.contains(p) {
            return Err(format!("attached policy {} is not published", p.key()));
        }
    }
    let store: PolicyStore = published.into_iter().collect();
    for (port, ok) in row.plaintext {
        let plain = store.evaluate(
            row.namespace,
            &wm.policy_keys,
            &connection(&format!("10.0.0.5 -> 10.1.0.11:{port}")),
        );
        let mtls = store.evaluate(
            row.namespace,
            &wm.policy_keys,
            &connection(&format!(
                "10.0.0.5 -> 10.1.0.11:{port} as cluster.local/ns/web/sa/frontend"
            )),
        );
        if plain.allowed != *ok || wm.accepts_plaintext(*port) != *ok || !mtls.allowed {
            return Err(format!(
                "port {port}: plaintext `{}` (mode says {}), mTLS `{}`; want plaintext allowed={ok}",
                verdict_text(&plain),
                wm.accepts_plaintext(*port),
                verdict_text(&mtls)
            ));
        }
    }
    Ok(())
}

#[test]
fn peer_authentication_table() {
    assert!(common::check_rows(peer_rows::ROWS, |r| r.name, check_pa) >= 20);
}

#[test]
fn yaml_value_input_translates_like_text() {
    for row in authorization_rows::ROWS.iter().chain(special_rows::ROWS) {
        let opts = TranslateOptions {
            enable_dry_run: row.enable_dry_run,
        };
        common::assert_value_input_agrees(row.name, row.crd, |input| {
            translate::authorization_policy(input, ROOT, &opts)
        });
    }
}

#[test]
fn converted_peer_authentication_shapes() {
    let strict_with_exemptions = parse_pas(
        r#"
metadata: {name: cart, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  mtls: {mode: STRICT}
  portLevelMtls: {8080: {mode: PERMISSIVE}, 8081: {mode: DISABLE}, 9090: {mode: STRICT}}
"#,
    );
    let want = parse_policies(
        r#"
- name: converted_peer_authentication_cart
  namespace: shop
  scope: WorkloadSelector
  action: Deny
  rules:
  - - - notPrincipals:
        - !Presence
    - - notDestinationPorts: [8080]
    - - notDestinationPorts: [8081]
"#,
    )
    .expect("want");
    let got = translate::converted_peer_authentication(
        &strict_with_exemptions[0],
        &strict_with_exemptions,
        ROOT,
    );
    assert_eq!(got.as_ref(), want.first());

    let permissive_with_strict_ports = parse_pas(
        r#"
metadata: {name: cart, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  mtls: {mode: PERMISSIVE}
  portLevelMtls: {9091: {mode: STRICT}, 9090: {mode: STRICT}, 8080: {mode: PERMISSIVE}}
"#,
    );
    let want = parse_policies(
        r#"
- name: converted_peer_authentication_cart
  namespace: shop
  scope: WorkloadSelector
  action: Deny
  rules:
  - - - notPrincipals:
        - !Presence
        destinationPorts: [9090]
  - - - notPrincipals:
        - !Presence
        destinationPorts: [9091]
"#,
    )
    .expect("want");
    let got = translate::converted_peer_authentication(
        &permissive_with_strict_ports[0],
        &permissive_with_strict_ports,
        ROOT,
    );
    assert_eq!(got.as_ref(), want.first());
}

#[test]
fn published_peer_authentication_policies() {
    assert!(peer_authentication_policies(&[], ROOT).is_empty());
    let all = parse_pas(
        r#"
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: PERMISSIVE}}
---
metadata: {name: cart, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  portLevelMtls: {9090: {mode: STRICT}}
---
metadata: {name: api, namespace: web}
spec:
  selector: {matchLabels: {app: api}}
  mtls: {mode: STRICT}
"#,
    );
    let keys: Vec<String> = peer_authentication_policies(&all, ROOT)
        .iter()
        .map(|p| p.key())
        .collect();
    assert_eq!(
        keys,
        [
            "istio-system/istio_converted_static_strict",
            "shop/converted_peer_authentication_cart",
        ]
    );
    let want = parse_policies(
        r#"
- name: istio_converted_static_strict
  namespace: istio-system
  scope: WorkloadSelector
  action: Deny
  rules:
  - - - notPrincipals:
        - !Presence
"#,
    )
    .expect("want");
    assert_eq!(want[0], translate::static_strict_policy(ROOT));
}
