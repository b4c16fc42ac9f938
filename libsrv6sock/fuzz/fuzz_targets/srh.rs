//! Fuzz the SRH/TLV parser: no input may panic, and whatever parses must emit and parse back unchanged; an
//! HMAC TLV found where Linux looks for it must emit and parse back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libsrv6sock::wire::hmac::{self, HmacRepr, HmacTlv};
use libsrv6sock::wire::srh::{Srh, SrhRepr};

fuzz_target!(|data: &[u8]| {
    let Ok(view) = Srh::new_checked(data) else { return };
    let _ = (view.active_segment(), view.tlvs().count());
    if let Some(tlv) = hmac::find(&view) {
        let repr = HmacRepr::parse(&tlv);
        let mut buf = [0u8; hmac::TLV_LEN];
        repr.emit(&mut buf).expect("TLV_LEN bytes hold an HMAC TLV");
        assert_eq!(HmacTlv::new_checked(&buf[..]).map(|t| HmacRepr::parse(&t)), Ok(repr));
        let _ = hmac::text(&view, std::net::Ipv6Addr::UNSPECIFIED, tlv.key_id());
    }
    let Ok(repr) = SrhRepr::parse(&view) else { return };
    if let Ok(bytes) = repr.to_bytes() {
        assert_eq!(SrhRepr::from_bytes(&bytes).as_ref(), Ok(&repr));
    }
});
