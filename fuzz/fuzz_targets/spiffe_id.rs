//! A SPIFFE ID from a peer certificate's URI SAN, a CSR or config (`hbone::SpiffeId`).
#![no_main]

use hbone::SpiffeId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match s.parse::<SpiffeId>() {
        Ok(id) => {
            // Accepted IDs print back exactly and rebuild from their parts.
            assert_eq!(id.to_string(), s);
            let parts = SpiffeId::new(id.trust_domain(), id.namespace(), id.service_account());
            assert_eq!(parts.as_ref(), Ok(&id));
            assert_eq!(format!("spiffe://{}", id.principal()), s);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
