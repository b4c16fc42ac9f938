//! Fuzz the SRH/TLV parser: no input may panic, and whatever parses must emit and parse back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libsrv6sock::wire::srh::{Srh, SrhRepr};

fuzz_target!(|data: &[u8]| {
    let Ok(view) = Srh::new_checked(data) else { return };
    let _ = (view.active_segment(), view.tlvs().count());
    let Ok(repr) = SrhRepr::parse(&view) else { return };
    if let Ok(bytes) = repr.to_bytes() {
        assert_eq!(SrhRepr::from_bytes(&bytes).as_ref(), Ok(&repr));
    }
});
