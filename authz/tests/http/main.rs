//! L7 authorization tables: AuthorizationPolicy documents translated for a waypoint, one
//! request, and the expected outcome (custom check, verdict, audits, dry-run reports); a
//! field-by-field match matrix; and the translation's attachments, errors and warnings.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod action_rows;
#[allow(dead_code)]
#[path = "../common/mod.rs"]
mod common;
mod condition_rows;
mod field_matrix;
mod match_rows;
mod translate_rows;

use std::net::{IpAddr, SocketAddr};

use authz::Peer;
use authz::http::{HttpDecision, HttpPolicies, HttpVerdict, JwtAuth, Request};
use authz::translate::http_authorization_policy;
use authz::{DryRunOutcome, DryRunResult};
use serde_json::json;

pub const ROOT: &str = "istio-system";

/// `(request, expected outcome)`.
///
/// Requests read `METHOD HOST/PATH [key=value]…` (no `/`: empty path) with keys `as=TD/ns/NS/
/// sa/SA` (peer identity; none without), `src=IP` (default 10.0.0.5), `remote=IP` (default
/// the source), `dst=IP:PORT` (default 10.1.0.11:8080), `sni=NAME`, `jwt=alice|bob|bare` (see
/// [`jwt`]) and `h:NAME=VALUE` (repeatable); a value may be `"quoted"`.
///
/// Outcomes read, joined by `, `: `custom NS/NAME#RULE PROVIDER` when a CUSTOM policy
/// matched; `allow NS/NAME#RULE`, `allow no-allow-policies`, `deny NS/NAME#RULE` or
/// `deny no-allow-matched`; `audit NS/NAME#RULE` per audit; `dry-run NS/NAME#RULE would-allow`
/// per dry-run report (`#-` without a matching rule).
pub type Case = (&'static str, &'static str);

/// Policies (AuthorizationPolicy documents separated by `---`, all enforced by the waypoint)
/// and requests.
pub struct Row {
    pub name: &'static str,
    pub policies: &'static str,
    pub cases: &'static [Case],
}

/// `(field, pattern, request, matches)`: the field is `from.<sourceField>`,
/// `to.<operationField>` or `when.<key>`. The harness checks an ALLOW with the pattern in the
/// positive form (allowed iff `matches`) and in the `not` form (allowed iff not `matches`).
pub type MatchCase = (&'static str, &'static str, &'static str, bool);

/// The JWTs requests can carry.
pub fn jwt(name: &str) -> JwtAuth {
    match name {
        "alice" => JwtAuth {
            principal: "https://idp.example.com/alice".into(),
            audiences: vec!["shop-api".into(), "web".into()],
            presenter: Some("web-client".into()),
            claims: json!({
                "iss": "https://idp.example.com",
                "sub": "alice",
                "groups": ["admin", "dev", 7],
                "realm_access": {"roles": ["buyer", "seller"], "level": "gold"},
                "email": "alice@example.com",
                "email_verified": true,
                "tier": 3,
                "org": {"name": "acme"},
            }),
        },
        "bob" => JwtAuth {
            principal: "https://idp.example.com/bob".into(),
            audiences: vec!["web".into()],
            presenter: None,
            claims: json!({"sub": "bob", "groups": "dev", "realm_access": {"roles": []}}),
        },
        // A token without iss/sub: no request principal.
        "bare" => JwtAuth::default(),
        other => panic!("unknown jwt {other}"),
    }
}

/// The owned parts of a parsed request.
pub struct Parsed {
    source: IpAddr,
    remote: IpAddr,
    destination: SocketAddr,
    peer: Option<Peer>,
    method: String,
    host: String,
    path: String,
    headers: Vec<(String, String)>,
    sni: Option<String>,
    jwt: Option<JwtAuth>,
}

impl Parsed {
    pub fn request(&self) -> Request<'_> {
        let mut r = Request::new(
            self.source,
            self.destination,
            &self.method,
            &self.host,
            &self.path,
        );
        r.remote_ip = self.remote;
        r.peer = self.peer.as_ref();
        r.headers = &self.headers;
        r.sni = self.sni.as_deref();
        r.jwt = self.jwt.as_ref();
        r
    }
}

/// Whitespace-separated words; `"…"` keeps spaces (the quotes are dropped).
fn words(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

pub fn parse_request(s: &str) -> Parsed {
    let w = words(s);
    let (method, target) = (w[0].clone(), &w[1]);
    let (host, path) = match target.find('/') {
        Some(i) => (target[..i].to_string(), target[i..].to_string()),
        None => (target.clone(), String::new()),
    };
    let source: IpAddr = "10.0.0.5".parse().unwrap();
    let mut p = Parsed {
        source,
        remote: source,
        destination: "10.1.0.11:8080".parse().unwrap(),
        peer: None,
        method,
        host,
        path,
        headers: Vec::new(),
        sni: None,
        jwt: None,
    };
    let mut remote = None;
    for kv in &w[2..] {
        let (k, v) = kv.split_once('=').expect("key=value");
        match k {
            "as" => p.peer = Some(common::peer(v)),
            "src" => p.source = v.parse().expect("src IP"),
            "remote" => remote = Some(v.parse().expect("remote IP")),
            "dst" => p.destination = v.parse().expect("dst IP:port"),
            "sni" => p.sni = Some(v.into()),
            "jwt" => p.jwt = Some(jwt(v)),
            h => {
                let name = h.strip_prefix("h:").expect("unknown request key");
                p.headers.push((name.into(), v.into()));
            }
        }
    }
    p.remote = remote.unwrap_or(p.source);
    p
}

/// Translate `---`-separated documents; every one must translate.
pub fn policies(docs: &str) -> Result<HttpPolicies, String> {
    docs.split("\n---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| {
            http_authorization_policy(d, ROOT)
                .map(|t| t.policy)
                .map_err(|e| e.to_string())
        })
        .collect()
}

fn rule_text(policy: &str, rule: usize) -> String {
    format!("{policy}#{rule}")
}

fn dry_text(d: &DryRunResult) -> String {
    let rule = d.rule.map_or("-".to_string(), |r| r.to_string());
    let outcome = match d.outcome {
        DryRunOutcome::WouldAllow => "would-allow",
        DryRunOutcome::WouldDeny => "would-deny",
    };
    format!("dry-run {}#{rule} {outcome}", d.policy)
}

fn verdict_text(d: &HttpDecision) -> String {
    use authz::http::DenyReason::{DenyPolicyMatched, NoAllowMatched};
    match &d.verdict {
        HttpVerdict::Allowed { by: Some(r) } => format!("allow {}", rule_text(&r.policy, r.rule)),
        HttpVerdict::Allowed { by: None } => "allow no-allow-policies".into(),
        HttpVerdict::Denied {
            by: Some(r),
            reason: DenyPolicyMatched,
        } => format!("deny {}", rule_text(&r.policy, r.rule)),
        HttpVerdict::Denied {
            by: None,
            reason: NoAllowMatched,
        } => "deny no-allow-matched".into(),
        other => format!("inconsistent {other:?}"),
    }
}

/// The outcome notation of [`Case`].
pub fn outcome(set: &HttpPolicies, req: &Request<'_>) -> String {
    let mut parts = Vec::new();
    if let Some(c) = set.custom(req) {
        parts.push(format!(
            "custom {} {}",
            rule_text(&c.policy, c.rule),
            c.provider
        ));
    }
    let d = set.decide(req);
    parts.push(verdict_text(&d));
    parts.extend(
        d.audited
            .iter()
            .map(|a| format!("audit {}", rule_text(&a.policy, a.rule))),
    );
    parts.extend(d.dry_run.iter().map(dry_text));
    parts.join(", ")
}

/// Runs every row and reports all failures at once; returns the number of cases.
fn run(rows: &[Row]) -> usize {
    let mut failures = Vec::new();
    let mut cases = 0;
    for row in rows {
        let set = match policies(row.policies) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("{}: policies do not translate: {e}", row.name));
                continue;
            }
        };
        assert!(!row.cases.is_empty(), "{}: no cases", row.name);
        for (req, want) in row.cases {
            cases += 1;
            let got = outcome(&set, &parse_request(req).request());
            if got != *want {
                failures.push(format!(
                    "{}: {req}\n   got `{got}`\n  want `{want}`",
                    row.name
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    cases
}

/// `fooBar` → `notFooBar`.
fn negated(field: &str) -> String {
    let mut chars = field.chars();
    let first = chars.next().map(|c| c.to_ascii_uppercase());
    format!(
        "not{}{}",
        first.into_iter().collect::<String>(),
        chars.as_str()
    )
}

/// The ALLOW policy testing `pattern` in `field`, positive or `not` form.
fn matrix_policy(field: &str, pattern: &str, negative: bool) -> String {
    let quoted = serde_json::to_string(pattern).unwrap();
    let rule = if let Some(key) = field.strip_prefix("when.") {
        let values = if negative { "notValues" } else { "values" };
        format!("when: [{{key: \"{key}\", {values}: [{quoted}]}}]")
    } else {
        let (part, name) = field.split_once('.').expect("from.X or to.X");
        let name = if negative {
            negated(name)
        } else {
            name.to_string()
        };
        let wrap = if part == "from" {
            "source"
        } else {
            "operation"
        };
        format!("{part}: [{{{wrap}: {{{name}: [{quoted}]}}}}]")
    };
    format!("metadata: {{name: p, namespace: shop}}\nspec:\n  rules:\n  - {rule}\n")
}

fn run_matrix(cases: &[MatchCase]) -> usize {
    let mut failures = Vec::new();
    for (field, pattern, req, matches) in cases {
        for negative in [false, true] {
            let doc = matrix_policy(field, pattern, negative);
            let want = if *matches != negative {
                "allow shop/p#0"
            } else {
                "deny no-allow-matched"
            };
            let got = match policies(&doc) {
                Ok(set) => outcome(&set, &parse_request(req).request()),
                Err(e) => e,
            };
            if got != want {
                let form = if negative { "not " } else { "" };
                failures.push(format!(
                    "{form}{field} {pattern:?} on `{req}`: got `{got}`, want `{want}`"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    cases.len()
}

#[test]
fn source_and_operation_match_matrix() {
    assert!(run_matrix(field_matrix::SOURCE) >= 50);
    assert!(run_matrix(field_matrix::OPERATION) >= 40);
}

#[test]
fn condition_match_matrix() {
    assert!(run_matrix(condition_rows::MATRIX) >= 60);
}

#[test]
fn rule_structure_table() {
    assert!(run(match_rows::ROWS) >= 15);
}

#[test]
fn condition_table() {
    assert!(run(condition_rows::ROWS) >= 8);
}

#[test]
fn action_order_dry_run_and_scenarios_table() {
    assert!(run(action_rows::ROWS) >= 40);
}

#[test]
fn row_names_are_unique() {
    let names = match_rows::ROWS
        .iter()
        .chain(condition_rows::ROWS)
        .chain(action_rows::ROWS)
        .map(|r| r.name)
        .chain(translate_rows::ROWS.iter().map(|r| r.name));
    assert!(common::assert_unique_names(names) >= 100);
}

#[test]
fn notation_reads_every_key() {
    let p = parse_request(
        r#"POST Shop.Example.com:8443/a?b=1 as=td/ns/n/sa/s src=10.9.0.1 remote=203.0.113.7 dst=10.1.0.12:9090 sni=x.example jwt=bob h:User-Agent="curl 8" h:x=1"#,
    );
    let r = p.request();
    assert_eq!(
        (r.method, r.host, r.path),
        ("POST", "Shop.Example.com:8443", "/a?b=1")
    );
    assert_eq!(r.peer.map(|p| p.principal()), Some("td/ns/n/sa/s".into()));
    assert_eq!(r.source_ip.to_string(), "10.9.0.1");
    assert_eq!(r.remote_ip.to_string(), "203.0.113.7");
    assert_eq!(
        (r.destination_ip.to_string(), r.destination_port),
        ("10.1.0.12".into(), 9090)
    );
    assert_eq!(
        (r.sni, r.jwt.map(|j| j.principal.as_str())),
        (Some("x.example"), Some("https://idp.example.com/bob"))
    );
    assert!(r.headers.any_value("user-agent", &mut |v| v == "curl 8"));
    let bare = parse_request("GET h");
    assert_eq!(
        (bare.request().path, bare.request().remote_ip),
        ("", bare.source)
    );
}
