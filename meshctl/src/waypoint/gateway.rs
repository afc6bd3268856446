//! The waypoint Gateway `meshctl waypoint apply` writes, in the shape `istioctl waypoint
//! generate` prints: `gateway.networking.k8s.io/v1`, class `istio-waypoint`, one listener
//! `mesh` on 15008 speaking HBONE, and the `istio.io/waypoint-for` label always set.
//!
//! Names are checked here (Kubernetes would refuse the object otherwise), which is also what
//! makes the YAML safe to write as plain text: a DNS label needs no quoting.

use std::fmt::Write as _;

use clap::ValueEnum;

pub const WAYPOINT_CLASS: &str = "istio-waypoint";
pub const WAYPOINT_FOR: &str = "istio.io/waypoint-for";
pub const FOR_SERVICE_ACCOUNT: &str = "istio.io/for-service-account";
pub const USE_WAYPOINT: &str = "istio.io/use-waypoint";

/// What may use the waypoint: the `istio.io/waypoint-for` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum For {
    Service,
    Workload,
    All,
}

impl For {
    pub fn as_str(self) -> &'static str {
        match self {
            For::Service => "service",
            For::Workload => "workload",
            For::All => "all",
        }
    }
}

/// One waypoint Gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waypoint {
    pub namespace: String,
    pub name: String,
    pub waypoint_for: For,
    /// The service account it serves (`istio.io/for-service-account`).
    pub service_account: Option<String>,
}

/// Why a waypoint cannot be written as asked.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidWaypoint {
    #[error(
        "{what} {value:?} is not a valid name: at most 63 lowercase letters, digits and '-', \
         starting with a letter and ending with a letter or digit"
    )]
    Label { what: &'static str, value: String },
    #[error(
        "service account {0:?} is not a valid name: at most 253 lowercase letters, digits, \
         '-' and '.', starting and ending with a letter or digit"
    )]
    ServiceAccount(String),
    #[error(
        "a service account's waypoint must admit workloads: use --for workload or --for all \
         (meshd ignores {FOR_SERVICE_ACCOUNT} on a waypoint for services only)"
    )]
    AccountForServices,
}

impl Waypoint {
    /// The waypoint `apply` asks for. Without `--name`: `waypoint`, or `waypoint-<sa>` for a
    /// service account's (not `<sa>`: istiod names the waypoint's Service and service account
    /// after the Gateway, which would collide with the application's own). Without `--for`:
    /// `service`, or `workload` for a service account's.
    pub fn new(
        namespace: &str,
        name: Option<&str>,
        waypoint_for: Option<For>,
        service_account: Option<&str>,
    ) -> Result<Self, InvalidWaypoint> {
        check_label("namespace", namespace)?;
        if let Some(sa) = service_account {
            check_subdomain(sa)?;
        }
        let name = match (name, service_account) {
            (Some(n), _) => n.to_string(),
            (None, Some(sa)) => format!("waypoint-{sa}"),
            (None, None) => "waypoint".to_string(),
        };
        check_label("waypoint name", &name)?;
        let waypoint_for = match (waypoint_for, service_account) {
            (Some(For::Service), Some(_)) => return Err(InvalidWaypoint::AccountForServices),
            (Some(f), _) => f,
            (None, Some(_)) => For::Workload,
            (None, None) => For::Service,
        };
        Ok(Waypoint {
            namespace: namespace.to_string(),
            name,
            waypoint_for,
            service_account: service_account.map(str::to_string),
        })
    }

    /// The Gateway as one YAML document (no `---`).
    pub fn to_yaml(&self) -> String {
        let mut out = String::from("apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n");
        out.push_str("metadata:\n");
        if let Some(sa) = &self.service_account {
            // Always a string, even for an account named like a number or a boolean.
            let _ = writeln!(out, "  annotations:\n    {FOR_SERVICE_ACCOUNT}: {sa:?}");
        }
        let _ = writeln!(
            out,
            "  labels:\n    {WAYPOINT_FOR}: {}\n  name: {}\n  namespace: {}",
            self.waypoint_for.as_str(),
            self.name,
            self.namespace
        );
        let _ = writeln!(
            out,
            "spec:\n  gatewayClassName: {WAYPOINT_CLASS}\n  listeners:\n  - name: mesh\n    \
             port: 15008\n    protocol: HBONE"
        );
        out
    }
}

/// A DNS-1123 label that starts with a letter (a DNS-1035 label: a Service may be named so).
pub fn check_label(what: &'static str, value: &str) -> Result<(), InvalidWaypoint> {
    let bytes = value.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.first().is_some_and(u8::is_ascii_lowercase)
        && bytes
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
    if ok {
        Ok(())
    } else {
        Err(InvalidWaypoint::Label {
            what,
            value: value.to_string(),
        })
    }
}

/// A DNS-1123 subdomain, what a service account's name must be.
fn check_subdomain(value: &str) -> Result<(), InvalidWaypoint> {
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let ok = !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|part| {
            let b = part.as_bytes();
            b.first().is_some_and(alnum)
                && b.last().is_some_and(alnum)
                && b.iter().all(|c| alnum(c) || *c == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(InvalidWaypoint::ServiceAccount(value.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_defaults() {
        type Want = Result<(&'static str, For), InvalidWaypoint>;
        type Case = (
            &'static str,
            Option<&'static str>,
            Option<For>,
            Option<&'static str>,
        );
        let label = |what, value: &str| {
            Err(InvalidWaypoint::Label {
                what,
                value: value.into(),
            })
        };
        let cases: [(Case, Want); 7] = [
            (("shop", None, None, None), Ok(("waypoint", For::Service))),
            (
                ("shop", Some("wp"), Some(For::All), None),
                Ok(("wp", For::All)),
            ),
            (
                ("shop", None, None, Some("reviews")),
                Ok(("waypoint-reviews", For::Workload)),
            ),
            (
                ("shop", Some("r"), Some(For::All), Some("reviews")),
                Ok(("r", For::All)),
            ),
            (
                ("shop", None, Some(For::Service), Some("reviews")),
                Err(InvalidWaypoint::AccountForServices),
            ),
            (("Shop", None, None, None), label("namespace", "Shop")),
            (
                ("shop", None, None, Some("a.b")),
                label("waypoint name", "waypoint-a.b"),
            ),
        ];
        for ((ns, name, waypoint_for, sa), want) in cases {
            let got =
                Waypoint::new(ns, name, waypoint_for, sa).map(|w| (w.name.clone(), w.waypoint_for));
            let want = want.map(|(n, f)| (n.to_string(), f));
            assert_eq!(got, want, "{ns} {name:?} {waypoint_for:?} {sa:?}");
        }
    }

    #[test]
    fn yaml_is_what_istioctl_generates() {
        let w = Waypoint::new("shop", None, None, Some("reviews")).unwrap();
        let want = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  \
                    annotations:\n    istio.io/for-service-account: \"reviews\"\n  labels:\n    \
                    istio.io/waypoint-for: workload\n  name: waypoint-reviews\n  namespace: \
                    shop\nspec:\n  gatewayClassName: istio-waypoint\n  listeners:\n  - name: \
                    mesh\n    port: 15008\n    protocol: HBONE\n";
        assert_eq!(w.to_yaml(), want);
        let parsed = kube_source::parse_yaml_document(&w.to_yaml());
        let Some(Ok(kube_source::Parsed::Object(kube_source::Object::Gateway(g)))) =
            parsed.into_iter().next()
        else {
            panic!("not a Gateway");
        };
        assert_eq!(g.spec.gateway_class_name, WAYPOINT_CLASS);
        assert_eq!(g.metadata.annotations[FOR_SERVICE_ACCOUNT], "reviews");
    }
}
