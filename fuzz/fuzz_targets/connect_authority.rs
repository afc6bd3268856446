//! The `:authority` of an HBONE CONNECT (`hbone::Target`), as a peer's request carries it.
#![no_main]

use hbone::Target;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(target) = s.parse::<Target>() else {
        return;
    };
    // What is accepted prints back to a string that parses to the same target.
    let shown = target.to_string();
    assert_eq!(shown.parse::<Target>().as_ref(), Ok(&target), "{shown:?}");
});
