//! meshd's bearer-token check (`control_plane::auth::bearer` and `LocalTokens::verify`).
//!
//! Random tokens stop at the signature, so the input is used two ways: as the whole
//! `authorization` header, and as the claims of a token this target signs with the same key,
//! which takes the claims parser and subject checks as far as an attacker who holds a token
//! could not, but a bug in minting could.
#![no_main]

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use control_plane::auth::{LocalTokens, bearer};
use libfuzzer_sys::fuzz_target;

const SECRET: [u8; 32] = [7; 32];

fn tokens() -> &'static LocalTokens {
    static TOKENS: OnceLock<LocalTokens> = OnceLock::new();
    TOKENS.get_or_init(|| LocalTokens::from_secret(&SECRET))
}

/// `header.claims.signature`, signed as meshd signs (HMAC-SHA256).
fn signed(claims: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let signed = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &SECRET);
    let sig = ring::hmac::sign(&key, signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

fuzz_target!(|data: &[u8]| {
    let t = tokens();
    if let Ok(header) = std::str::from_utf8(data) {
        if let Ok(token) = bearer(Some(header)) {
            let _ = t.verify(token);
        }
        let _ = t.verify(header);
    }
    if let Ok(caller) = t.verify(&signed(data)) {
        assert!(!caller.namespace.is_empty() && !caller.service_account.is_empty());
        let _ = caller.account();
    }
});
