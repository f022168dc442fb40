//! SpiffeId parsing must never panic, and whatever it accepts must print back to the same text.
#![no_main]

use ambit_identity::SpiffeId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(id) = SpiffeId::parse(text) {
        assert_eq!(id.to_string(), text, "accepted text must round-trip exactly");
        let again = SpiffeId::parse(&id.to_string()).expect("a formatted id parses");
        assert_eq!(again, id);
    }
});
