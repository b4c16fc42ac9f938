//! Property tests of the DNS path record codec (`srv6-path(5)`) and of the agent's replies that carry its
//! SRHs to the shim: `parse`/`emit` round-trip, no input makes a decoder panic, and every record's SRH is
//! one the SRH codec reads back.

use std::net::Ipv6Addr;

use libsrv6sock::wire::agent::{emit_reply, AgentReply, EntryRepr, MAX_REPLY, STATUS_OK};
use libsrv6sock::wire::path::{best_for, PathRecord, Route, MAX_RETURN};
use libsrv6sock::wire::prefix::Ipv6Prefix;
use libsrv6sock::wire::srh::SrhRepr;
use proptest::prelude::*;

fn addr() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>().prop_map(Ipv6Addr::from)
}

fn record() -> impl Strategy<Value = PathRecord> {
    (
        any::<u16>(),
        addr(),
        0u8..=128,
        prop_oneof![prop::collection::vec(addr(), 1..=20).prop_map(Route::Segments), addr().prop_map(Route::Binding)],
        prop::collection::vec(addr(), 0..=MAX_RETURN),
    )
        .prop_map(|(priority, a, len, route, return_path)| PathRecord {
            priority,
            covers: Ipv6Prefix::new(a, len).unwrap(),
            route,
            return_path,
        })
}

proptest! {
    #[test]
    fn emit_then_parse_is_identity(r in record()) {
        let bytes = r.to_bytes().unwrap();
        let back = PathRecord::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&back, &r);
        prop_assert_eq!(back.to_bytes().unwrap(), bytes);
    }

    #[test]
    fn the_srh_of_a_record_parses(r in record(), dst in addr()) {
        let srh = r.srh(dst).unwrap();
        let back = SrhRepr::from_bytes(&srh.to_bytes().unwrap()).unwrap();
        prop_assert_eq!(back.segments.len(), r.route.waypoints().len() + 1);
        prop_assert_eq!(back.return_path().map(<[_]>::len).unwrap_or(0), r.return_path.len());
    }

    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(r) = PathRecord::from_bytes(&data) {
            prop_assert_eq!(r.to_bytes().unwrap(), data.clone());
        }
        let _ = PathRecord::from_srn(&data);
    }

    #[test]
    fn mutated_records_never_panic(r in record(), edits in prop::collection::vec((0usize..400, any::<u8>()), 1..6)) {
        let mut bytes = r.to_bytes().unwrap();
        for (i, v) in edits {
            let n = bytes.len();
            bytes[i % n] = v;
        }
        let _ = PathRecord::from_bytes(&bytes);
        let _ = PathRecord::from_bytes(&bytes[..bytes.len() / 2]);
    }

    #[test]
    fn best_record_covers_the_address(rs in prop::collection::vec(record(), 0..6), a in addr()) {
        match best_for(&rs, a) {
            Some(best) => {
                prop_assert!(best.covers.contains(a));
                prop_assert!(rs.iter().filter(|r| r.covers.contains(a)).all(|r| r.priority >= best.priority));
            }
            None => prop_assert!(rs.iter().all(|r| !r.covers.contains(a))),
        }
    }
}

proptest! {
    #[test]
    fn agent_replies_round_trip(rs in prop::collection::vec((record(), addr(), any::<u32>()), 0..8)) {
        let entries: Vec<EntryRepr> = rs
            .iter()
            .map(|(r, a, ttl)| EntryRepr { addr: *a, ttl: *ttl, srh: r.srh(*a).unwrap().to_bytes().unwrap(), flags: 0 })
            .collect();
        let mut buf = vec![0u8; MAX_REPLY];
        let n = emit_reply(STATUS_OK, &entries, &mut buf).unwrap();
        let reply = AgentReply::new_checked(&buf[..n]).unwrap();
        // Entries that do not fit are left out, the others come back whole and in order.
        let got: Vec<EntryRepr> = reply.entries().map(|e| EntryRepr { addr: e.addr, ttl: e.ttl, srh: e.srh.to_vec(), flags: e.flags }).collect();
        prop_assert_eq!(got.len(), reply.count());
        let mut want = entries.iter();
        for g in &got {
            prop_assert!(want.any(|w| w == g));
        }
    }

    #[test]
    fn agent_garbage_never_panics(data in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(reply) = AgentReply::new_checked(&data) {
            prop_assert_eq!(reply.entries().count(), reply.count());
        }
        let _ = libsrv6sock::wire::agent::parse_request(&data);
    }
}
