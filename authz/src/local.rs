//! The `policies` entries of the local config file (protocol.md 6) and their validation.
//!
//! Serde checks the shape (camelCase keys, unknown keys rejected); [`TryFrom`] then checks the
//! values and names the policy and field in every error. String matches are YAML tags:
//! `!Exact foo`, `!Prefix foo`, `!Suffix foo` and `!Presence`. For `!Presence` the forms
//! serde_yaml produces are also accepted: `!Presence null`, `!Presence []` (a zero-field
//! tuple variant) and the plain scalar `Presence` (a unit variant).

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use crate::model::{Action, Clause, Match, Policy, Rule, Scope, ServiceAccountMatch, StringMatch};

/// One Authorization object as written in the local config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalPolicy {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    /// `Global`, `Namespace` or `WorkloadSelector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// `Allow` or `Deny`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
    /// rules → clauses → matches.
    #[serde(default)]
    pub rules: Vec<Vec<Vec<LocalMatch>>>,
}

/// One Match as written in the local config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalMatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<LocalStringMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<LocalStringMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<LocalServiceAccount>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<LocalServiceAccount>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<LocalStringMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<LocalStringMatch>,
    /// CIDRs (`10.0.0.0/8`); a bare address means a single host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_source_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_destination_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destination_ports: Vec<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_destination_ports: Vec<i64>,
}

/// A tagged string match (`!Exact foo`), kept as YAML until validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LocalStringMatch(pub Value);

/// `{namespace, serviceAccount}`; both are required.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalServiceAccount {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

/// A policy from the local config that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The YAML does not have the expected shape (the message carries serde_yaml's path).
    #[error("policies: {0}")]
    Syntax(String),
    /// A value is wrong: `policy` is `namespace/name`, `field` the path inside the policy.
    #[error("policy {policy}: {field}: {reason}")]
    Invalid {
        policy: String,
        field: String,
        reason: String,
    },
}

/// Parse and validate a YAML list of Authorization objects (the value of `policies`).
/// Two policies with the same key are rejected.
pub fn parse_policies(yaml: &str) -> Result<Vec<Policy>, PolicyError> {
    if yaml.trim().is_empty() {
        return Ok(Vec::new());
    }
    let local: Vec<LocalPolicy> =
        serde_yaml::from_str(yaml).map_err(|e| PolicyError::Syntax(e.to_string()))?;
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(local.len());
    for (i, lp) in local.into_iter().enumerate() {
        let policy = Policy::try_from(lp)?;
        if !seen.insert(policy.key()) {
            return Err(PolicyError::Invalid {
                policy: policy.key(),
                field: format!("policies[{i}]"),
                reason: "duplicate policy key".into(),
            });
        }
        out.push(policy);
    }
    Ok(out)
}

impl LocalPolicy {
    /// Validate without consuming.
    pub fn to_policy(&self) -> Result<Policy, PolicyError> {
        Policy::try_from(self.clone())
    }
}

impl TryFrom<LocalPolicy> for Policy {
    type Error = PolicyError;

    fn try_from(lp: LocalPolicy) -> Result<Self, Self::Error> {
        let id = policy_id(&lp.namespace, &lp.name);
        let err = |field: &str, reason: String| PolicyError::Invalid {
            policy: id.clone(),
            field: field.to_string(),
            reason,
        };
        if lp.name.is_empty() {
            return Err(err("name", "required".into()));
        }
        if lp.namespace.is_empty() {
            return Err(err("namespace", "required".into()));
        }
        let scope = match lp.scope.as_deref() {
            Some("Global") => Scope::Global,
            Some("Namespace") => Scope::Namespace,
            Some("WorkloadSelector") => Scope::WorkloadSelector,
            Some(other) => {
                return Err(err(
                    "scope",
                    format!(
                        "unknown scope {other:?} (expected Global, Namespace or WorkloadSelector)"
                    ),
                ));
            }
            None => return Err(err("scope", "required".into())),
        };
        let action = match lp.action.as_deref() {
            Some("Allow") => Action::Allow,
            Some("Deny") => Action::Deny,
            Some(other) => {
                return Err(err(
                    "action",
                    format!("unknown action {other:?} (expected Allow or Deny)"),
                ));
            }
            None => return Err(err("action", "required".into())),
        };
        let mut rules = Vec::with_capacity(lp.rules.len());
        for (ri, rule) in lp.rules.iter().enumerate() {
            let mut clauses = Vec::with_capacity(rule.len());
            for (ci, clause) in rule.iter().enumerate() {
                let mut matches = Vec::with_capacity(clause.len());
                for (mi, m) in clause.iter().enumerate() {
                    let at = format!("rules[{ri}][{ci}][{mi}]");
                    matches.push(convert_match(m, &at).map_err(|(f, r)| err(&f, r))?);
                }
                clauses.push(Clause { matches });
            }
            rules.push(Rule { clauses });
        }
        Ok(Policy {
            name: lp.name,
            namespace: lp.namespace,
            scope,
            action,
            dry_run: lp.dry_run,
            rules,
        })
    }
}

fn policy_id(namespace: &str, name: &str) -> String {
    let or = |s: &str, d: &'static str| {
        if s.is_empty() {
            d.to_string()
        } else {
            s.to_string()
        }
    };
    format!(
        "{}/{}",
        or(namespace, "<no namespace>"),
        or(name, "<no name>")
    )
}

type FieldError = (String, String);

fn convert_match(m: &LocalMatch, at: &str) -> Result<Match, FieldError> {
    let strings = |vals: &[LocalStringMatch], key: &str| -> Result<Vec<StringMatch>, FieldError> {
        vals.iter()
            .enumerate()
            .map(|(i, v)| string_match(&v.0).map_err(|r| (format!("{at}.{key}[{i}]"), r)))
            .collect()
    };
    let nets = |vals: &[String], key: &str| -> Result<Vec<IpNet>, FieldError> {
        vals.iter()
            .enumerate()
            .map(|(i, v)| parse_net(v).map_err(|r| (format!("{at}.{key}[{i}]"), r)))
            .collect()
    };
    let ports = |vals: &[i64], key: &str| -> Result<Vec<u16>, FieldError> {
        vals.iter()
            .enumerate()
            .map(|(i, v)| {
                u16::try_from(*v).map_err(|_| {
                    (
                        format!("{at}.{key}[{i}]"),
                        format!("{v} is not a port (0-65535)"),
                    )
                })
            })
            .collect()
    };
    let accounts =
        |vals: &[LocalServiceAccount], key: &str| -> Result<Vec<ServiceAccountMatch>, FieldError> {
            vals.iter()
                .enumerate()
                .map(|(i, v)| {
                    let field = |f: &str| format!("{at}.{key}[{i}].{f}");
                    let namespace = v
                        .namespace
                        .clone()
                        .ok_or_else(|| (field("namespace"), "required".to_string()))?;
                    let service_account = v
                        .service_account
                        .clone()
                        .ok_or_else(|| (field("serviceAccount"), "required".to_string()))?;
                    Ok(ServiceAccountMatch {
                        namespace,
                        service_account,
                    })
                })
                .collect()
        };
    Ok(Match {
        namespaces: strings(&m.namespaces, "namespaces")?,
        not_namespaces: strings(&m.not_namespaces, "notNamespaces")?,
        principals: strings(&m.principals, "principals")?,
        not_principals: strings(&m.not_principals, "notPrincipals")?,
        source_ips: nets(&m.source_ips, "sourceIps")?,
        not_source_ips: nets(&m.not_source_ips, "notSourceIps")?,
        destination_ips: nets(&m.destination_ips, "destinationIps")?,
        not_destination_ips: nets(&m.not_destination_ips, "notDestinationIps")?,
        destination_ports: ports(&m.destination_ports, "destinationPorts")?,
        not_destination_ports: ports(&m.not_destination_ports, "notDestinationPorts")?,
        service_accounts: accounts(&m.service_accounts, "serviceAccounts")?,
        not_service_accounts: accounts(&m.not_service_accounts, "notServiceAccounts")?,
    })
}

/// A CIDR, or a bare address meaning one host (/32 or /128).
pub(crate) fn parse_net(s: &str) -> Result<IpNet, String> {
    if s.contains('/') {
        s.parse::<IpNet>()
            .map_err(|_| format!("{s:?} is not a CIDR (address/prefix-length)"))
    } else {
        s.parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| format!("{s:?} is not an IP address or CIDR"))
    }
}

fn string_match(v: &Value) -> Result<StringMatch, String> {
    const EXPECTED: &str = "expected !Exact <s>, !Prefix <s>, !Suffix <s> or !Presence";
    match v {
        Value::Tagged(t) => {
            let tag = t.tag.to_string();
            let tag = tag.trim_start_matches('!');
            let text = || match &t.value {
                Value::String(s) => Ok(s.clone()),
                other => Err(format!("!{tag} needs a string, found {}", kind(other))),
            };
            match tag {
                "Exact" => Ok(StringMatch::Exact(text()?)),
                "Prefix" => Ok(StringMatch::Prefix(text()?)),
                "Suffix" => Ok(StringMatch::Suffix(text()?)),
                "Presence" => match &t.value {
                    Value::Null => Ok(StringMatch::Presence),
                    Value::Sequence(s) if s.is_empty() => Ok(StringMatch::Presence),
                    other => Err(format!("!Presence takes no value, found {}", kind(other))),
                },
                other => Err(format!("unknown string match !{other} ({EXPECTED})")),
            }
        }
        Value::String(s) if s == "Presence" => Ok(StringMatch::Presence),
        other => Err(format!("found {} ({EXPECTED})", kind(other))),
    }
}

fn kind(v: &Value) -> String {
    match v {
        Value::Null => "nothing".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("untagged string {s:?}"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a map".into(),
        Value::Tagged(t) => format!("tagged value {}", t.tag),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(m: &str) -> Result<StringMatch, String> {
        let v: Value = serde_yaml::from_str(m).expect("yaml");
        string_match(&v)
    }

    #[test]
    fn string_match_forms() {
        assert_eq!(one("!Exact foo"), Ok(StringMatch::Exact("foo".into())));
        assert_eq!(one("!Prefix foo"), Ok(StringMatch::Prefix("foo".into())));
        assert_eq!(one("!Suffix ''"), Ok(StringMatch::Suffix(String::new())));
        for p in [
            "!Presence",
            "!Presence null",
            "!Presence ~",
            "!Presence []",
            "Presence",
        ] {
            assert_eq!(one(p), Ok(StringMatch::Presence), "{p}");
        }
        for bad in [
            "!Exact",
            "!Exact 12",
            "!Presence x",
            "!Regex a.*",
            "foo",
            "{Exact: foo}",
        ] {
            assert!(one(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nets() {
        assert_eq!(parse_net("10.0.0.1"), Ok("10.0.0.1/32".parse().unwrap()));
        assert_eq!(parse_net("fd00::1"), Ok("fd00::1/128".parse().unwrap()));
        assert!(parse_net("10.0.0.0/33").is_err());
        assert!(parse_net("10.0.0").is_err());
    }
}
