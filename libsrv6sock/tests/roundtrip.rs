//! Property tests: `parse`/`emit` round-trip, no input makes the parser panic, and Linux accepts every SRH
//! that `emit` writes (a real `setsockopt(IPV6_RTHDR)`; no privilege is needed for it).

use std::net::Ipv6Addr;
use std::os::fd::AsFd;

use libsrv6sock::attach;
use libsrv6sock::wire::reply::{ReturnPath, MAX_REPLY_LEN};
use libsrv6sock::wire::srh::{Srh, SrhRepr};
use libsrv6sock::wire::tlv::TlvRepr;
use proptest::prelude::*;
use socket2::{Domain, Socket, Type};

fn addr() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>().prop_map(Ipv6Addr::from)
}

fn tlv() -> impl Strategy<Value = TlvRepr> {
    prop_oneof![
        (any::<bool>(), any::<u32>(), prop::collection::vec(any::<u8>(), 0..=32))
            .prop_map(|(d_flag, key_id, digest)| TlvRepr::Hmac { d_flag, key_id, digest }),
        prop::collection::vec(addr(), 0..=15).prop_map(TlvRepr::ReturnPath),
        // Any type but the ones with a structure of their own.
        (
            any::<u8>().prop_filter("structured type", |t| ![0, 4, 5, 124].contains(t)),
            prop::collection::vec(any::<u8>(), 0..=40)
        )
            .prop_map(|(tlv_type, value)| TlvRepr::Unknown { tlv_type, value }),
    ]
}

fn srh() -> impl Strategy<Value = SrhRepr> {
    (
        prop::collection::vec(addr(), 1..=20),
        any::<u8>(),
        any::<u8>(),
        any::<u16>(),
        prop::collection::vec(tlv(), 0..4),
        any::<u8>(),
    )
        .prop_map(|(segments, next_header, flags, tag, tlvs, sl)| SrhRepr {
            next_header,
            segments_left: sl % segments.len() as u8,
            flags,
            tag,
            segments,
            tlvs,
        })
}

proptest! {
    #[test]
    fn emit_then_parse_is_identity(repr in srh()) {
        let bytes = repr.to_bytes().unwrap();
        prop_assert_eq!(bytes.len() % 8, 0);
        let back = SrhRepr::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&back, &repr);
        prop_assert_eq!(back.to_bytes().unwrap(), bytes);
    }

    #[test]
    fn parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(view) = Srh::new_checked(&bytes[..]) {
            let _ = view.active_segment();
            if let Ok(repr) = SrhRepr::parse(&view) {
                // Whatever parsed must emit and parse back to the same thing.
                if let Ok(out) = repr.to_bytes() {
                    prop_assert_eq!(SrhRepr::from_bytes(&out).unwrap(), repr);
                }
            }
        }
    }

    #[test]
    fn mutated_headers_never_panic(repr in srh(), pos in any::<usize>(), byte in any::<u8>()) {
        let mut bytes = repr.to_bytes().unwrap();
        let at = pos % bytes.len();
        bytes[at] = byte;
        let _ = SrhRepr::from_bytes(&bytes);
        let _ = SrhRepr::from_bytes(&bytes[..at]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn linux_accepts_what_we_emit(repr in srh()) {
        let sock = Socket::new(Domain::IPV6, Type::STREAM, None).unwrap();
        let bytes = repr.to_bytes().unwrap();
        attach::set_srh(sock.as_fd(), &bytes).unwrap();
        let mut back = [0u8; 2048];
        let n = attach::get_srh(sock.as_fd(), &mut back).unwrap();
        // Linux keeps the header as given (it fills next header and segments[0] only on send).
        prop_assert_eq!(SrhRepr::from_bytes(&back[..n]).unwrap().segments, repr.segments);
    }

    #[test]
    fn linux_accepts_every_reply_srh(ways in prop::collection::vec(addr(), 1..16), peer in addr()) {
        let mut syn = SrhRepr::for_path(peer, &ways[..1]).unwrap();
        syn.tlvs.push(TlvRepr::ReturnPath(ways.clone()));
        let bytes = syn.to_bytes().unwrap();
        // Waypoints no reply may visit are refused; every other return path gives a header Linux takes.
        let Ok(Some(path)) = ReturnPath::find(&bytes) else { return Ok(()) };
        let sock = Socket::new(Domain::IPV6, Type::STREAM, None).unwrap();
        for upto in 1..=path.len() {
            let mut buf = [0u8; MAX_REPLY_LEN];
            let n = path.emit_srh(upto, peer, &mut buf).unwrap();
            attach::set_srh(sock.as_fd(), &buf[..n]).unwrap();
            let reply = SrhRepr::from_bytes(&buf[..n]).unwrap();
            prop_assert_eq!(&reply.segments[1..], &ways[..upto]);
            prop_assert_eq!(reply.segments_left as usize, upto);
        }
    }
}

#[test]
fn linux_rejects_a_trailing_pad1_that_we_never_emit() {
    let sock = Socket::new(Domain::IPV6, Type::STREAM, None).unwrap();
    let mut repr = SrhRepr::for_path(Ipv6Addr::LOCALHOST, &[]).unwrap();
    repr.tlvs.push(TlvRepr::Unknown { tlv_type: 125, value: vec![0; 5] });
    let mut bytes = repr.to_bytes().unwrap();
    // Replace our 9 bytes of PadN with 8 bytes of Pad1/PadN ending in a lone Pad1: Linux says no.
    bytes.truncate(31);
    bytes.push(0);
    bytes[1] = 3;
    assert!(attach::set_srh(sock.as_fd(), &bytes).is_err());
    assert!(attach::set_srh(sock.as_fd(), &repr.to_bytes().unwrap()).is_ok());
}
