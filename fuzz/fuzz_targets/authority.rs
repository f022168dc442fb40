//! `:authority` parsing must never panic, and whatever it accepts must print back to text that
//! parses to the same target.
#![no_main]

use ambit_hbone::authority;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(target) = authority::parse(text) {
        let printed = target.to_string();
        let again = authority::parse(&printed).expect("a printed target parses");
        assert_eq!(again, target);
    }
});
