//! Fuzz the DNS path record decoders (type 65300 and SRN's 65280): no input may panic, whatever parses must
//! emit back the same bytes, and its SRH must be one the SRH codec reads back. The same bytes also go to the
//! decoders of the agent's messages (`wire::agent`), which the shim runs on what the agent answers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use libsrv6sock::wire::agent::{parse_request, AgentReply};
use libsrv6sock::wire::path::PathRecord;
use libsrv6sock::wire::srh::SrhRepr;

fuzz_target!(|data: &[u8]| {
    let _ = PathRecord::from_srn(data);
    let _ = parse_request(data);
    if let Ok(reply) = AgentReply::new_checked(data) {
        assert_eq!(reply.entries().count(), reply.count());
    }
    let Ok(record) = PathRecord::from_bytes(data) else { return };
    assert_eq!(record.to_bytes().as_deref(), Ok(data));
    let srh = record.srh(record.covers.addr()).and_then(|s| s.to_bytes());
    if let Ok(bytes) = srh {
        assert!(SrhRepr::from_bytes(&bytes).is_ok());
    }
});
