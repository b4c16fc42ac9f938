//! Property test: no public function or method of the wire layer (and `attach::find_cmsg`) panics, whatever
//! its arguments. The shim calls this code inside other people's programs, where a panic is a crash; a
//! mistake must come back as a typed [`Error`].

use std::net::Ipv6Addr;

use libsrv6sock::attach::find_cmsg;
use libsrv6sock::wire::prefix::Ipv6Prefix;
use libsrv6sock::wire::reply::{ReturnPath, MAX_REPLY_LEN};
use libsrv6sock::wire::sid::SidLayout;
use libsrv6sock::wire::srh::{Srh, SrhRepr};
use libsrv6sock::wire::tlv::{
    emit_padding, padding_len, Tlv, TlvIter, TlvRepr, TYPE_HMAC, TYPE_PAD1, TYPE_PADN, TYPE_RETURN_PATH,
};
use libsrv6sock::wire::Error;
use proptest::prelude::*;

fn addr() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>().prop_map(Ipv6Addr::from)
}

/// Any TLV, including ones too long for the wire and types that have a structure of their own.
fn tlv() -> impl Strategy<Value = TlvRepr> {
    prop_oneof![
        (any::<bool>(), any::<u32>(), prop::collection::vec(any::<u8>(), 0..300))
            .prop_map(|(d_flag, key_id, digest)| TlvRepr::Hmac { d_flag, key_id, digest }),
        prop::collection::vec(addr(), 0..20).prop_map(TlvRepr::ReturnPath),
        // Types with a variant of their own are checked when read back: an `Unknown` of theirs may not parse.
        (
            any::<u8>().prop_filter("a type without a variant", |t| ![
                TYPE_PAD1,
                TYPE_PADN,
                TYPE_HMAC,
                TYPE_RETURN_PATH
            ]
            .contains(t)),
            prop::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(tlv_type, value)| TlvRepr::Unknown { tlv_type, value }),
    ]
}

/// Any owned header, valid or not (no segment, too many, `segments_left` past the list, huge TLVs).
fn srh_repr() -> impl Strategy<Value = SrhRepr> {
    (
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        any::<u16>(),
        prop::collection::vec(addr(), 0..140),
        prop::collection::vec(tlv(), 0..12),
    )
        .prop_map(|(next_header, segments_left, flags, tag, segments, tlvs)| SrhRepr {
            next_header,
            segments_left,
            flags,
            tag,
            segments,
            tlvs,
        })
}

/// Header-shaped bytes: mostly a valid header with one byte changed, cut anywhere; sometimes noise.
fn srh_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..400),
        (
            prop::collection::vec(addr(), 1..6),
            prop::collection::vec(tlv(), 0..3),
            any::<usize>(),
            any::<u8>(),
            any::<usize>()
        )
            .prop_map(|(segments, tlvs, at, byte, cut)| {
                let repr = SrhRepr { segments_left: 0, next_header: 59, flags: 0, tag: 0, segments, tlvs };
                let mut bytes = repr.to_bytes().unwrap_or_default();
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] = byte;
                    bytes.truncate(cut % (bytes.len() + 1));
                }
                bytes
            }),
    ]
}

/// Every read accessor of a view, checked or not.
fn read_all<T: AsRef<[u8]>>(view: &Srh<T>, index: usize) {
    let _ = (view.next_header(), view.hdr_ext_len(), view.header_len(), view.routing_type(), view.flags());
    let _ = (view.segments_left(), view.last_entry(), view.tag(), view.segment_count(), view.tlv_offset());
    let _ = (view.segment(index), view.segments().count(), view.active_segment(), view.tlv_bytes().len());
    let _ = view.tlvs().filter_map(Result::ok).map(|t| t.wire_len()).sum::<usize>();
    let _ = view.check().map_err(|e| e.to_string());
}

proptest! {
    #[test]
    fn srh_views_never_panic(mut bytes in srh_bytes(), index in any::<usize>(), value in any::<u8>(), a in addr()) {
        let view = Srh::new_unchecked(&mut bytes[..]);
        read_all(&view, index);
        let mut view = view;
        let _ = view.set_segment(index, a);
        let _ = view.set_segment(index % 300, a);
        let _ = view.set_segments_left(value);
        if let Ok(mut view) = Srh::new_checked(&mut bytes[..]) {
            read_all(&view, index);
            let count = view.segment_count();
            // On a checked view, every index inside the list works and every index past it is refused.
            for i in 0..count {
                prop_assert_eq!(view.set_segment(i, a), Ok(()));
                prop_assert_eq!(view.segment(i), Some(a));
            }
            prop_assert_eq!(view.set_segment(count + index % 1000, a), Err(Error::SegmentIndex {
                index: count + index % 1000,
                count,
            }));
            let sl = view.set_segments_left(value);
            prop_assert_eq!(sl.is_ok(), value <= view.last_entry());
            // The view stays valid after successful setters.
            prop_assert!(view.check().is_ok());
            let _ = SrhRepr::parse(&view).map(|r| r.to_bytes());
        }
        let _ = SrhRepr::from_bytes(&bytes).map_err(|e| e.to_string());
    }

    #[test]
    fn srh_repr_never_panics(repr in srh_repr(), buf_len in 0usize..2200, dst in addr(), ways in prop::collection::vec(addr(), 0..140)) {
        let _ = (repr.active_segment(), repr.destination(), repr.return_path());
        let len = repr.buffer_len();
        let mut buf = vec![0u8; buf_len];
        match (repr.emit(&mut buf), len) {
            (Ok(n), Ok(len)) => {
                prop_assert_eq!(n, len);
                prop_assert!(SrhRepr::from_bytes(&buf[..n]).is_ok());
            }
            (Err(e), _) => { let _ = e.to_string(); }
            (Ok(_), Err(e)) => prop_assert!(false, "emit succeeded but buffer_len says {}", e),
        }
        let _ = repr.to_bytes();
        let _ = SrhRepr::for_path(dst, &ways).and_then(|r| r.to_bytes());
    }

    #[test]
    fn tlvs_never_panic(
        area in prop::collection::vec(any::<u8>(), 0..300),
        base in any::<usize>(),
        offset in any::<usize>(),
        tlv_type in any::<u8>(),
        repr in tlv(),
        buf_len in 0usize..400,
        n in 0usize..64,
        len in any::<usize>(),
    ) {
        let _ = TlvIter::new(&area, base).filter_map(Result::ok).map(|t| t.wire_len()).sum::<usize>();
        let _ = TlvRepr::parse_all(&area, base);
        let view = Tlv { offset, tlv_type, value: &area };
        let _ = (view.wire_len(), TlvRepr::parse(&view, base));
        let _ = (repr.tlv_type(), repr.wire_len());
        let mut buf = vec![0u8; buf_len];
        let _ = repr.emit(&mut buf);
        let pad = padding_len(len);
        prop_assert!(pad != 1 && (len % 8 + pad) % 8 == 0);
        match emit_padding(&mut buf, n) {
            Ok(()) => prop_assert!(n != 1 && n <= buf.len()),
            Err(e) => prop_assert!(n == 1 || n > buf.len(), "{}", e),
        }
    }

    #[test]
    fn sids_and_prefixes_never_panic(
        bits in (any::<u8>(), any::<u8>(), any::<u8>()),
        a in addr(),
        plen in any::<u8>(),
        function in any::<u64>(),
        argument in any::<u64>(),
        text in "\\PC{0,60}",
        shaped in ("[0-9a-f:]{0,40}", "[0-9]{0,4}"),
    ) {
        let _ = Ipv6Prefix::new(a, plen).map(|p| (p.addr(), p.prefix_len(), p.contains(a), p.to_string()));
        let _ = text.parse::<Ipv6Prefix>();
        let _ = format!("{}/{}", shaped.0, shaped.1).parse::<Ipv6Prefix>();
        let _ = SidLayout::default().split(a);
        if let Ok(layout) = SidLayout::new(bits.0, bits.1, bits.2) {
            let _ = (layout.locator_bits(), layout.function_bits(), layout.argument_bits());
            let split = layout.split(a);
            prop_assert_eq!(split.locator.prefix_len(), bits.0);
            let _ = layout.build(split.locator, function, argument);
            // What split produced builds back to the same SID's locator, function and argument.
            let rebuilt = layout.build(split.locator, split.function, split.argument);
            prop_assert!(rebuilt.is_ok());
            if let Ok(p) = Ipv6Prefix::new(a, plen) {
                let _ = layout.build(p, function, argument);
            }
        }
    }

    #[test]
    fn reply_srh_never_panics(bytes in srh_bytes(), upto in 0usize..20, peer in addr(), buf_len in 0usize..300) {
        if let Ok(Some(path)) = ReturnPath::find(&bytes) {
            let _ = (path.len(), path.is_empty(), path.get(upto), path.iter().count());
            let _ = path.position(|a| a.segments()[0] & 1 == 0);
            let mut buf = vec![0u8; buf_len];
            if let Ok(n) = path.emit_srh(upto, peer, &mut buf) {
                prop_assert!(n <= MAX_REPLY_LEN);
                if n > 0 {
                    // What it writes is a header Linux would accept: it parses back.
                    prop_assert!(SrhRepr::from_bytes(&buf[..n]).is_ok());
                }
            }
        }
    }

    #[test]
    fn cmsg_search_never_panics(control in prop::collection::vec(any::<u8>(), 0..200), level in any::<i32>(), ty in any::<i32>()) {
        if let Some(range) = find_cmsg(&control, level, ty) {
            prop_assert!(range.start <= range.end && range.end <= control.len());
        }
    }
}
