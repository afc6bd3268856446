//! A JSON Web Key Set, made usable once (when it arrives), and the signature check.
//!
//! Rules, in order:
//! 1. A set is `{"keys": [...]}`; each key `jsonwebtoken` can turn into a verifying key (RSA,
//!    EC P-256/P-384, Ed25519, or a symmetric `oct` key) is kept, with its `kid` and `alg`;
//!    others are skipped (Envoy does the same). A set with no usable key is an error.
//! 2. A token is checked against the keys of its algorithm's family whose `kid` equals the
//!    token's (every such key when the token has no `kid`) and whose `alg`, when given, is the
//!    token's. A family never crosses (an RSA public key is never an HMAC secret).
//! 3. Only the signature is checked here; times, issuer and audiences are the caller's.

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// Why a key set is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    #[error("not a JSON Web Key Set: {0}")]
    Json(String),
    #[error("no usable key among {0} (RSA, EC P-256/P-384, Ed25519 and oct are supported)")]
    NoUsableKey(usize),
}

/// Why a signature does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    /// No key of the set fits the token's `kid` and `alg`.
    NoKey,
    /// Keys fit, none verifies.
    Invalid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

fn family(alg: Algorithm) -> Family {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Family::Hmac,
        Algorithm::ES256 | Algorithm::ES384 => Family::Ec,
        Algorithm::EdDSA => Family::Ed,
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => Family::Rsa,
    }
}

struct Key {
    kid: Option<String>,
    alg: Option<Algorithm>,
    family: Family,
    key: DecodingKey,
}

/// Rule 1: the usable keys of one set.
pub struct KeySet {
    keys: Vec<Key>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| (&k.kid, &k.alg, k.family)))
            .finish()
    }
}

impl KeySet {
    /// Rule 1.
    pub fn parse(json: &str) -> Result<KeySet, KeysError> {
        let set: JwkSet = serde_json::from_str(json).map_err(|e| KeysError::Json(e.to_string()))?;
        let keys: Vec<Key> = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let family = match &jwk.algorithm {
                    AlgorithmParameters::RSA(_) => Family::Rsa,
                    AlgorithmParameters::EllipticCurve(_) => Family::Ec,
                    AlgorithmParameters::OctetKeyPair(_) => Family::Ed,
                    AlgorithmParameters::OctetKey(_) => Family::Hmac,
                };
                if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
                    return None;
                }
                // A key for an algorithm that is not a signature (RSA-OAEP) is not ours.
                let alg = match &jwk.common.key_algorithm {
                    Some(a) => Some(format!("{a:?}").parse::<Algorithm>().ok()?),
                    None => None,
                };
                let key = DecodingKey::from_jwk(jwk).ok()?;
                Some(Key {
                    kid: jwk.common.key_id.clone(),
                    alg,
                    family,
                    key,
                })
            })
            .collect();
        if keys.is_empty() {
            return Err(KeysError::NoUsableKey(set.keys.len()));
        }
        Ok(KeySet { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether a key has this `kid` (a token with a `kid` the set lacks asks for a refetch).
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Rules 2 and 3: whether `token` (of algorithm `alg`, key id `kid`) is signed by a key of
    /// this set.
    pub fn verify(
        &self,
        token: &str,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<(), SignatureError> {
        let want = family(alg);
        let mut validation = Validation::new(alg);
        // Claims are checked by the caller (rule 3).
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let mut fitting = self.keys.iter().filter(|k| {
            k.family == want
                && kid.is_none_or(|kid| k.kid.as_deref() == Some(kid))
                && k.alg.is_none_or(|a| a == alg)
        });
        let first = fitting.next().ok_or(SignatureError::NoKey)?;
        let verified = std::iter::once(first).chain(fitting).any(|k| {
            jsonwebtoken::decode::<serde::de::IgnoredAny>(token, &k.key, &validation).is_ok()
        });
        match verified {
            true => Ok(()),
            false => Err(SignatureError::Invalid),
        }
    }
}
