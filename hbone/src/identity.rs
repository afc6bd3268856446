//! SPIFFE workload identities: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//!
//! This is the only identity form Istio issues to workloads, so it is the only one we
//! accept: anything else in a certificate's URI SAN is an error, not a best guess.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Istio's default trust domain.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// Kubernetes' default service account.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

const SCHEME: &str = "spiffe://";

/// A workload's SPIFFE identity. Cloning shares the parts: every connection's log and policy
/// check holds one, so a clone must not allocate.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: Arc<str>,
    namespace: Arc<str>,
    service_account: Arc<str>,
}

/// Why a string is not a workload SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("identity {0:?} does not start with \"spiffe://\"")]
    NotSpiffe(String),
    #[error(
        "identity {0:?} is not of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
    )]
    Shape(String),
    #[error("identity {id:?} has an empty {part}")]
    Empty { id: String, part: &'static str },
    #[error("identity {id:?}: {part} {value:?} has a character not allowed in a SPIFFE ID")]
    BadCharacter {
        id: String,
        part: &'static str,
        value: String,
    },
}

impl SpiffeId {
    /// Builds an identity from its parts, checking each one.
    pub fn new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> Result<Self, IdentityError> {
        let id = SpiffeId {
            trust_domain: trust_domain.into().into(),
            namespace: namespace.into().into(),
            service_account: service_account.into().into(),
        };
        let shown = id.to_string();
        for (part, value) in [
            ("trust domain", &id.trust_domain),
            ("namespace", &id.namespace),
            ("service account", &id.service_account),
        ] {
            if value.is_empty() {
                return Err(IdentityError::Empty { id: shown, part });
            }
            if !value.chars().all(allowed_char) {
                return Err(IdentityError::BadCharacter {
                    id: shown,
                    part,
                    value: value.to_string(),
                });
            }
        }
        Ok(id)
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// The form Istio's authorization policies match principals against: the ID without `spiffe://`.
    pub fn principal(&self) -> String {
        format!(
            "{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

/// Letters, digits and the punctuation Kubernetes names and trust domains use.
fn allowed_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for SpiffeId {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| IdentityError::NotSpiffe(s.to_string()))?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [td, "ns", ns, "sa", sa] => SpiffeId::new(*td, *ns, *sa),
            _ => Err(IdentityError::Shape(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        let id: SpiffeId = "spiffe://cluster.local/ns/shop/sa/cart".parse().unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "shop");
        assert_eq!(id.service_account(), "cart");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/cart");
        assert_eq!(id.principal(), "cluster.local/ns/shop/sa/cart");
    }

    type Check = fn(&IdentityError) -> bool;

    #[test]
    fn rejects_bad_input() {
        let cases: &[(&str, Check)] = &[
            ("cluster.local/ns/a/sa/b", |e| {
                matches!(e, IdentityError::NotSpiffe(_))
            }),
            ("http://cluster.local/ns/a/sa/b", |e| {
                matches!(e, IdentityError::NotSpiffe(_))
            }),
            ("spiffe://cluster.local/ns/a", |e| {
                matches!(e, IdentityError::Shape(_))
            }),
            ("spiffe://cluster.local/ns/a/sa/b/extra", |e| {
                matches!(e, IdentityError::Shape(_))
            }),
            ("spiffe://cluster.local/namespace/a/sa/b", |e| {
                matches!(e, IdentityError::Shape(_))
            }),
            ("spiffe:///ns/a/sa/b", |e| {
                matches!(
                    e,
                    IdentityError::Empty {
                        part: "trust domain",
                        ..
                    }
                )
            }),
            ("spiffe://td/ns//sa/b", |e| {
                matches!(
                    e,
                    IdentityError::Empty {
                        part: "namespace",
                        ..
                    }
                )
            }),
            ("spiffe://td/ns/a/sa/", |e| {
                matches!(
                    e,
                    IdentityError::Empty {
                        part: "service account",
                        ..
                    }
                )
            }),
            ("spiffe://td/ns/a b/sa/c", |e| {
                matches!(
                    e,
                    IdentityError::BadCharacter {
                        part: "namespace",
                        ..
                    }
                )
            }),
            ("", |e| matches!(e, IdentityError::NotSpiffe(_))),
        ];
        for (input, check) in cases {
            let err = input.parse::<SpiffeId>().unwrap_err();
            assert!(check(&err), "{input:?} gave {err:?}");
            assert!(!err.to_string().is_empty());
        }
    }
}
