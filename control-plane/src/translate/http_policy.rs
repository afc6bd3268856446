//! `authz::http::HttpPolicy` -> `mesh.waypoint.v1.HttpPolicy`: the waypoint's L7 policy model
//! in its wire form (the waypoint's `config.rs` converts it back).
//!
//! The `authz` crate owns the translation of AuthorizationPolicy; this is only the change of
//! representation, and it is lossless:
//! 1. Names, action (CUSTOM's provider in `provider`), dry-run, and rule nesting are carried
//!    one to one, in order.
//! 2. Strings keep their kind, ours (`contains`) included; presence is the empty `Presence`.
//! 3. CIDRs are written as the model holds them (`10.1.2.3/8` stays so); ports widen to u32.
//! 4. A condition's key is its Istio name; its values go in the fields of the key's kind
//!    (strings in `values`, CIDRs in `nets`, ports in `ports`), as the waypoint reads them.
//! 5. Nothing here can fail: the model only holds values the wire form can express.
//! 6. A CUSTOM policy's provider is not part of the model: the caller resolves it
//!    (`ext_authz::resolve`) and sets `ext_authz`.

use authz::http::{
    Condition, ConditionValues, HttpAction, HttpPolicy, HttpRule, HttpStringMatch, Operation,
    Source,
};
use authz::{ServiceAccountMatch, StringMatch};
use ipnet::IpNet;
use proto::waypoint as pb;

/// The HttpPolicy resource for `policy` (resource name: [`HttpPolicy::key`]).
pub fn to_proto(policy: &HttpPolicy) -> pb::HttpPolicy {
    let (action, provider) = match &policy.action {
        HttpAction::Allow => (pb::Action::Allow, String::new()),
        HttpAction::Deny => (pb::Action::Deny, String::new()),
        HttpAction::Audit => (pb::Action::Audit, String::new()),
        HttpAction::Custom { provider } => (pb::Action::Custom, provider.clone()),
    };
    pb::HttpPolicy {
        name: policy.name.clone(),
        namespace: policy.namespace.clone(),
        action: action as i32,
        provider,
        dry_run: policy.dry_run,
        rules: policy.rules.iter().map(rule).collect(),
        // Resolved against the mesh config and the index by the caller (`ext_authz`).
        ext_authz: None,
    }
}

fn rule(r: &HttpRule) -> pb::Rule {
    pb::Rule {
        from: r.from.iter().map(source).collect(),
        to: r.to.iter().map(operation).collect(),
        when: r.when.iter().map(condition).collect(),
    }
}

fn source(s: &Source) -> pb::Source {
    pb::Source {
        principals: strings(&s.principals),
        not_principals: strings(&s.not_principals),
        request_principals: strings(&s.request_principals),
        not_request_principals: strings(&s.not_request_principals),
        namespaces: strings(&s.namespaces),
        not_namespaces: strings(&s.not_namespaces),
        ip_blocks: nets(&s.ip_blocks),
        not_ip_blocks: nets(&s.not_ip_blocks),
        remote_ip_blocks: nets(&s.remote_ip_blocks),
        not_remote_ip_blocks: nets(&s.not_remote_ip_blocks),
        service_accounts: accounts(&s.service_accounts),
        not_service_accounts: accounts(&s.not_service_accounts),
        trust_domains: strings(&s.trust_domains),
        not_trust_domains: strings(&s.not_trust_domains),
    }
}

pub(super) fn operation(o: &Operation) -> pb::Operation {
    pb::Operation {
        hosts: strings(&o.hosts),
        not_hosts: strings(&o.not_hosts),
        ports: ports(&o.ports),
        not_ports: ports(&o.not_ports),
        methods: strings(&o.methods),
        not_methods: strings(&o.not_methods),
        paths: strings(&o.paths),
        not_paths: strings(&o.not_paths),
    }
}

/// Rule 4.
fn condition(c: &Condition) -> pb::Condition {
    let mut out = pb::Condition {
        key: c.key.to_string(),
        ..Default::default()
    };
    for (values, negated) in [(&c.values, false), (&c.not_values, true)] {
        match values {
            ConditionValues::Strings(v) if negated => out.not_values = strings(v),
            ConditionValues::Strings(v) => out.values = strings(v),
            ConditionValues::Nets(v) if negated => out.not_nets = nets(v),
            ConditionValues::Nets(v) => out.nets = nets(v),
            ConditionValues::Ports(v) if negated => out.not_ports = ports(v),
            ConditionValues::Ports(v) => out.ports = ports(v),
        }
    }
    out
}

/// Rule 2.
fn strings(v: &[HttpStringMatch]) -> Vec<pb::StringMatch> {
    use pb::string_match::Kind;
    v.iter()
        .map(|m| pb::StringMatch {
            kind: Some(match m {
                HttpStringMatch::Istio(StringMatch::Exact(s)) => Kind::Exact(s.clone()),
                HttpStringMatch::Istio(StringMatch::Prefix(s)) => Kind::Prefix(s.clone()),
                HttpStringMatch::Istio(StringMatch::Suffix(s)) => Kind::Suffix(s.clone()),
                HttpStringMatch::Istio(StringMatch::Presence) => Kind::Presence(pb::Presence {}),
                HttpStringMatch::Contains(s) => Kind::Contains(s.as_str().to_string()),
            }),
        })
        .collect()
}

fn nets(v: &[IpNet]) -> Vec<String> {
    v.iter().map(IpNet::to_string).collect()
}

fn ports(v: &[u16]) -> Vec<u32> {
    v.iter().copied().map(u32::from).collect()
}

fn accounts(v: &[ServiceAccountMatch]) -> Vec<pb::ServiceAccount> {
    v.iter()
        .map(|a| pb::ServiceAccount {
            namespace: a.namespace.clone(),
            name: a.service_account.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use authz::translate::http_authorization_policy;
    use pb::string_match::Kind;

    fn translated(yaml: &str) -> pb::HttpPolicy {
        let value: serde_yaml::Value = serde_yaml::from_str(&format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n{yaml}"
        ))
        .expect("test YAML");
        let t = http_authorization_policy(&value, "istio-system").expect("translates");
        to_proto(&t.policy)
    }

    fn sm(k: Kind) -> pb::StringMatch {
        pb::StringMatch { kind: Some(k) }
    }

    #[test]
    fn every_field_reaches_the_wire() {
        let p = translated(
            "metadata: {name: p, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: '', name: api}]
  action: CUSTOM
  provider: {name: ext-authz}
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/shop/sa/web, '*']
        notRequestPrincipals: ['*sqlmap*']
        ipBlocks: [10.1.2.3/8]
    - source: {serviceAccounts: [web]}
    to:
    - operation: {methods: [GET], paths: ['/api/*'], ports: ['8080'], notHosts: ['*.evil']}
    when:
    - {key: 'request.headers[User-Agent]', notValues: ['curl*']}
    - {key: source.ip, values: [10.0.0.0/16]}
    - {key: destination.port, values: ['80']}
",
        );
        assert_eq!((p.name.as_str(), p.namespace.as_str()), ("p", "shop"));
        assert_eq!(p.action, pb::Action::Custom as i32);
        assert_eq!(p.provider, "ext-authz");
        let r = &p.rules[0];
        let src = &r.from[0];
        assert_eq!(
            src.principals,
            [
                sm(Kind::Exact("cluster.local/ns/shop/sa/web".into())),
                sm(Kind::Presence(pb::Presence {}))
            ]
        );
        assert_eq!(
            src.not_request_principals,
            [sm(Kind::Contains("sqlmap".into()))]
        );
        assert_eq!(src.ip_blocks, ["10.1.2.3/8"]);
        assert_eq!(
            r.from[1].service_accounts,
            [pb::ServiceAccount {
                namespace: "shop".into(),
                name: "web".into()
            }]
        );
        let op = &r.to[0];
        assert_eq!(op.methods, [sm(Kind::Exact("GET".into()))]);
        assert_eq!(op.paths, [sm(Kind::Prefix("/api/".into()))]);
        assert_eq!(op.ports, [8080]);
        assert_eq!(op.not_hosts, [sm(Kind::Suffix(".evil".into()))]);
        let when = &r.when;
        assert_eq!(when[0].key, "request.headers[user-agent]");
        assert_eq!(when[0].not_values, [sm(Kind::Prefix("curl".into()))]);
        assert!(when[0].values.is_empty());
        assert_eq!(when[1].key, "source.ip");
        assert_eq!(when[1].nets, ["10.0.0.0/16"]);
        assert_eq!(when[2].ports, [80]);
        assert!(when[2].values.is_empty() && when[2].nets.is_empty());
    }

    #[test]
    fn actions_and_dry_run() {
        for (action, want) in [
            ("ALLOW", pb::Action::Allow),
            ("DENY", pb::Action::Deny),
            ("AUDIT", pb::Action::Audit),
        ] {
            let p = translated(&format!(
                "metadata: {{name: p, namespace: shop, annotations: {{istio.io/dry-run: 'true'}}}}\nspec: {{targetRefs: [{{kind: Service, name: api}}], action: {action}, rules: [{{}}]}}"
            ));
            assert_eq!(p.action, want as i32, "{action}");
            assert!(p.provider.is_empty());
            assert!(p.dry_run);
            assert_eq!(p.rules, [pb::Rule::default()]);
        }
    }
}
