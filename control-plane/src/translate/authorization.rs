//! `authz::Policy` -> `istio.security.Authorization`: the policy model in its wire form.
//!
//! The `authz` crate owns istiod's translation of AuthorizationPolicy and PeerAuthentication;
//! this is only the change of representation, and it is lossless:
//! 1. Names, scope, action, dry-run, and rule/clause/match nesting are carried one to one, in
//!    order (ztunnel evaluates rules in order and reports the matching rule's index).
//! 2. A CIDR becomes `Address { address, length }` with the address exactly as written
//!    (`10.1.2.3/8` stays `10.1.2.3` with length 8: istiod sends `prefix.Addr()`), 4 bytes for
//!    IPv4 and 16 for IPv6; a single IP is already a /32 or /128 in the model.
//! 3. Ports widen from u16 to u32; `Presence` becomes the `presence` (`Empty`) case.
//! 4. Nothing here can fail: the model only holds values the wire form can express.

use authz::{Action, Clause, Match, Policy, Rule, Scope, ServiceAccountMatch, StringMatch};
use ipnet::IpNet;
use proto::security as pb;

/// The Authorization resource for `policy` (resource name: [`Policy::key`]).
pub fn to_proto(policy: &Policy) -> pb::Authorization {
    pb::Authorization {
        name: policy.name.clone(),
        namespace: policy.namespace.clone(),
        scope: scope(policy.scope) as i32,
        action: action(policy.action) as i32,
        rules: policy.rules.iter().map(rule).collect(),
        dry_run: policy.dry_run,
        extensions: Vec::new(),
    }
}

fn scope(s: Scope) -> pb::Scope {
    match s {
        Scope::Global => pb::Scope::Global,
        Scope::Namespace => pb::Scope::Namespace,
        Scope::WorkloadSelector => pb::Scope::WorkloadSelector,
    }
}

fn action(a: Action) -> pb::Action {
    match a {
        Action::Allow => pb::Action::Allow,
        Action::Deny => pb::Action::Deny,
    }
}

fn rule(r: &Rule) -> pb::Rule {
    pb::Rule {
        clauses: r.clauses.iter().map(clause).collect(),
    }
}

fn clause(c: &Clause) -> pb::Clause {
    pb::Clause {
        matches: c.matches.iter().map(matches).collect(),
    }
}

fn matches(m: &Match) -> pb::Match {
    pb::Match {
        namespaces: strings(&m.namespaces),
        not_namespaces: strings(&m.not_namespaces),
        principals: strings(&m.principals),
        not_principals: strings(&m.not_principals),
        source_ips: nets(&m.source_ips),
        not_source_ips: nets(&m.not_source_ips),
        destination_ips: nets(&m.destination_ips),
        not_destination_ips: nets(&m.not_destination_ips),
        destination_ports: ports(&m.destination_ports),
        not_destination_ports: ports(&m.not_destination_ports),
        service_accounts: accounts(&m.service_accounts),
        not_service_accounts: accounts(&m.not_service_accounts),
        extensions: Vec::new(),
    }
}

fn strings(v: &[StringMatch]) -> Vec<pb::StringMatch> {
    use pb::string_match::MatchType;
    v.iter()
        .map(|s| pb::StringMatch {
            match_type: Some(match s {
                StringMatch::Exact(x) => MatchType::Exact(x.clone()),
                StringMatch::Prefix(x) => MatchType::Prefix(x.clone()),
                StringMatch::Suffix(x) => MatchType::Suffix(x.clone()),
                StringMatch::Presence => MatchType::Presence(()),
            }),
        })
        .collect()
}

fn nets(v: &[IpNet]) -> Vec<pb::Address> {
    v.iter()
        .map(|n| pb::Address {
            address: super::ip_bytes(n.addr()),
            length: u32::from(n.prefix_len()),
        })
        .collect()
}

fn ports(v: &[u16]) -> Vec<u32> {
    v.iter().copied().map(u32::from).collect()
}

fn accounts(v: &[ServiceAccountMatch]) -> Vec<pb::ServiceAccountMatch> {
    v.iter()
        .map(|a| pb::ServiceAccountMatch {
            namespace: a.namespace.clone(),
            service_account: a.service_account.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::string_match::MatchType;

    fn sm(m: MatchType) -> pb::StringMatch {
        pb::StringMatch {
            match_type: Some(m),
        }
    }

    fn addr(bytes: &[u8], length: u32) -> pb::Address {
        pb::Address {
            address: bytes.to_vec(),
            length,
        }
    }

    fn policy(scope: Scope, action: Action, dry_run: bool, rules: Vec<Rule>) -> Policy {
        Policy {
            name: "p".into(),
            namespace: "ns".into(),
            scope,
            action,
            dry_run,
            rules,
        }
    }

    fn expected(
        scope: pb::Scope,
        action: pb::Action,
        dry_run: bool,
        rules: Vec<pb::Rule>,
    ) -> pb::Authorization {
        pb::Authorization {
            name: "p".into(),
            namespace: "ns".into(),
            scope: scope as i32,
            action: action as i32,
            rules,
            dry_run,
            extensions: vec![],
        }
    }

    fn one_match(m: Match) -> Vec<Rule> {
        vec![Rule {
            clauses: vec![Clause { matches: vec![m] }],
        }]
    }

    fn one_pb_match(m: pb::Match) -> Vec<pb::Rule> {
        vec![pb::Rule {
            clauses: vec![pb::Clause { matches: vec![m] }],
        }]
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("test CIDR")
    }

    /// The inverse, for the round trip: what ztunnel would read back.
    fn from_proto(a: &pb::Authorization) -> Policy {
        let strings = |v: &[pb::StringMatch]| -> Vec<StringMatch> {
            v.iter()
                .map(|s| match s.match_type.clone().expect("set") {
                    MatchType::Exact(x) => StringMatch::Exact(x),
                    MatchType::Prefix(x) => StringMatch::Prefix(x),
                    MatchType::Suffix(x) => StringMatch::Suffix(x),
                    MatchType::Presence(()) => StringMatch::Presence,
                })
                .collect()
        };
        let nets = |v: &[pb::Address]| -> Vec<IpNet> {
            v.iter()
                .map(|a| {
                    let ip: std::net::IpAddr = match a.address.len() {
                        4 => <[u8; 4]>::try_from(a.address.as_slice()).expect("4").into(),
                        _ => <[u8; 16]>::try_from(a.address.as_slice())
                            .expect("16")
                            .into(),
                    };
                    IpNet::new(ip, u8::try_from(a.length).expect("len")).expect("prefix")
                })
                .collect()
        };
        let ports = |v: &[u32]| -> Vec<u16> {
            v.iter().map(|p| u16::try_from(*p).expect("port")).collect()
        };
        let accounts = |v: &[pb::ServiceAccountMatch]| -> Vec<ServiceAccountMatch> {
            v.iter()
                .map(|a| ServiceAccountMatch {
                    namespace: a.namespace.clone(),
                    service_account: a.service_account.clone(),
                })
                .collect()
        };
        Policy {
            name: a.name.clone(),
            namespace: a.namespace.clone(),
            scope: match pb::Scope::try_from(a.scope).expect("scope") {
                pb::Scope::Global => Scope::Global,
                pb::Scope::Namespace => Scope::Namespace,
                pb::Scope::WorkloadSelector => Scope::WorkloadSelector,
            },
            action: match pb::Action::try_from(a.action).expect("action") {
                pb::Action::Allow => Action::Allow,
                pb::Action::Deny => Action::Deny,
            },
            dry_run: a.dry_run,
            rules: a
                .rules
                .iter()
                .map(|r| Rule {
                    clauses: r
                        .clauses
                        .iter()
                        .map(|c| Clause {
                            matches: c
                                .matches
                                .iter()
                                .map(|m| Match {
                                    namespaces: strings(&m.namespaces),
                                    not_namespaces: strings(&m.not_namespaces),
                                    principals: strings(&m.principals),
                                    not_principals: strings(&m.not_principals),
                                    source_ips: nets(&m.source_ips),
                                    not_source_ips: nets(&m.not_source_ips),
                                    destination_ips: nets(&m.destination_ips),
                                    not_destination_ips: nets(&m.not_destination_ips),
                                    destination_ports: ports(&m.destination_ports),
                                    not_destination_ports: ports(&m.not_destination_ports),
                                    service_accounts: accounts(&m.service_accounts),
                                    not_service_accounts: accounts(&m.not_service_accounts),
                                })
                                .collect(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn converts_every_field_and_round_trips() {
        let sa = |ns: &str, sa: &str| ServiceAccountMatch {
            namespace: ns.into(),
            service_account: sa.into(),
        };
        let pb_sa = |ns: &str, sa: &str| pb::ServiceAccountMatch {
            namespace: ns.into(),
            service_account: sa.into(),
        };
        let cases: Vec<(&str, Policy, pb::Authorization)> = vec![
            (
                "no rules, global allow",
                policy(Scope::Global, Action::Allow, false, vec![]),
                expected(pb::Scope::Global, pb::Action::Allow, false, vec![]),
            ),
            (
                "empty rule (allow all), namespace deny, dry run",
                policy(Scope::Namespace, Action::Deny, true, vec![Rule::default()]),
                expected(
                    pb::Scope::Namespace,
                    pb::Action::Deny,
                    true,
                    vec![pb::Rule { clauses: vec![] }],
                ),
            ),
            (
                "string matches of every kind",
                policy(
                    Scope::WorkloadSelector,
                    Action::Allow,
                    false,
                    one_match(Match {
                        namespaces: vec![
                            StringMatch::Exact("a".into()),
                            StringMatch::Prefix("b".into()),
                        ],
                        not_namespaces: vec![StringMatch::Suffix("c".into())],
                        principals: vec![StringMatch::Exact("td/ns/x/sa/y".into())],
                        not_principals: vec![StringMatch::Presence],
                        ..Default::default()
                    }),
                ),
                expected(
                    pb::Scope::WorkloadSelector,
                    pb::Action::Allow,
                    false,
                    one_pb_match(pb::Match {
                        namespaces: vec![
                            sm(MatchType::Exact("a".into())),
                            sm(MatchType::Prefix("b".into())),
                        ],
                        not_namespaces: vec![sm(MatchType::Suffix("c".into()))],
                        principals: vec![sm(MatchType::Exact("td/ns/x/sa/y".into()))],
                        not_principals: vec![sm(MatchType::Presence(()))],
                        ..Default::default()
                    }),
                ),
            ),
            (
                "addresses keep the written address, ports widen, accounts",
                policy(
                    Scope::WorkloadSelector,
                    Action::Deny,
                    false,
                    one_match(Match {
                        source_ips: vec![net("10.1.2.3/8"), net("192.168.0.1/32")],
                        not_source_ips: vec![net("::1/128")],
                        destination_ips: vec![net("2001:db8::/32")],
                        not_destination_ips: vec![net("0.0.0.0/0")],
                        destination_ports: vec![80, 65535],
                        not_destination_ports: vec![1],
                        service_accounts: vec![sa("ns", "web")],
                        not_service_accounts: vec![sa("other", "db")],
                        ..Default::default()
                    }),
                ),
                expected(
                    pb::Scope::WorkloadSelector,
                    pb::Action::Deny,
                    false,
                    one_pb_match(pb::Match {
                        source_ips: vec![addr(&[10, 1, 2, 3], 8), addr(&[192, 168, 0, 1], 32)],
                        not_source_ips: vec![addr(
                            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                            128,
                        )],
                        destination_ips: vec![addr(
                            &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                            32,
                        )],
                        not_destination_ips: vec![addr(&[0, 0, 0, 0], 0)],
                        destination_ports: vec![80, 65535],
                        not_destination_ports: vec![1],
                        service_accounts: vec![pb_sa("ns", "web")],
                        not_service_accounts: vec![pb_sa("other", "db")],
                        ..Default::default()
                    }),
                ),
            ),
            (
                "nesting and order are kept, empty matches included",
                policy(
                    Scope::Namespace,
                    Action::Allow,
                    false,
                    vec![
                        Rule {
                            clauses: vec![
                                Clause {
                                    matches: vec![
                                        Match {
                                            destination_ports: vec![2],
                                            ..Default::default()
                                        },
                                        Match {
                                            destination_ports: vec![1],
                                            ..Default::default()
                                        },
                                    ],
                                },
                                Clause {
                                    matches: vec![Match::default()],
                                },
                            ],
                        },
                        Rule {
                            clauses: vec![Clause { matches: vec![] }],
                        },
                    ],
                ),
                expected(
                    pb::Scope::Namespace,
                    pb::Action::Allow,
                    false,
                    vec![
                        pb::Rule {
                            clauses: vec![
                                pb::Clause {
                                    matches: vec![
                                        pb::Match {
                                            destination_ports: vec![2],
                                            ..Default::default()
                                        },
                                        pb::Match {
                                            destination_ports: vec![1],
                                            ..Default::default()
                                        },
                                    ],
                                },
                                pb::Clause {
                                    matches: vec![pb::Match::default()],
                                },
                            ],
                        },
                        pb::Rule {
                            clauses: vec![pb::Clause { matches: vec![] }],
                        },
                    ],
                ),
            ),
        ];
        for (name, model, want) in cases {
            let got = to_proto(&model);
            assert_eq!(got, want, "{name}");
            assert_eq!(from_proto(&got), model, "{name}: round trip");
        }
    }

    #[test]
    fn static_strict_policy_matches_protocol_doc() {
        // protocol.md 9: DENY, WORKLOAD_SELECTOR, one rule with one match not_principals=[presence].
        let got = to_proto(&authz::translate::static_strict_policy("istio-system"));
        let want = pb::Authorization {
            name: "istio_converted_static_strict".into(),
            namespace: "istio-system".into(),
            scope: pb::Scope::WorkloadSelector as i32,
            action: pb::Action::Deny as i32,
            rules: one_pb_match(pb::Match {
                not_principals: vec![sm(MatchType::Presence(()))],
                ..Default::default()
            }),
            dry_run: false,
            extensions: vec![],
        };
        assert_eq!(got, want);
    }
}
