//! `srv6path update`: publish or withdraw a name's path records on a zone's primary with an RFC 2136 dynamic
//! update signed with TSIG (RFC 8945), so that paths spread like any other record: NOTIFY and IXFR/AXFR to
//! the secondaries, and resolvers everywhere.
//!
//! hickory-client sends the update and signs it (the hickory-proto the resolver already uses); the key comes
//! from a file in BIND's `key` statement format, as `tsig-keygen` writes it, so that no secret is on the
//! command line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_client::client::Client;
use hickory_client::proto::dnssec::rdata::tsig::TsigAlgorithm;
use hickory_client::proto::dnssec::tsig::TSigner;
use hickory_client::proto::op::update_message::{self, UpdateMessage};
use hickory_client::proto::op::{Message, ResponseCode};
use hickory_client::proto::rr::rdata::NULL;
use hickory_client::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_client::proto::runtime::TokioRuntimeProvider;
use hickory_client::proto::tcp::TcpClientStream;
use hickory_client::proto::xfer::{DnsHandle, DnsRequest, DnsRequestOptions, FirstAnswer};
use libsrv6sock::wire::path::{PathRecord, RR_TYPE};

/// Seconds of clock difference the server may allow for the signature.
const FUDGE: u16 = 300;

/// What is wrong with a key file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// A statement is missing.
    #[error("no {0} in the key file (expected BIND's key statement: key \"NAME\" {{ algorithm hmac-sha256; secret \"BASE64\"; }};)")]
    Missing(&'static str),
    /// The secret is not base64.
    #[error("the secret is not base64: {0}")]
    Secret(String),
    /// The key's name is not a DNS name.
    #[error("the key name {0:?} is not a DNS name")]
    Name(String),
    /// An algorithm hickory cannot sign with.
    #[error("algorithm {0} cannot sign: use hmac-sha256, hmac-sha384 or hmac-sha512")]
    Algorithm(String),
}

/// A TSIG key from a file.
pub struct Key {
    name: Name,
    algorithm: TsigAlgorithm,
    secret: Vec<u8>,
}

/// The quoted or bare word after `keyword` in `text`.
fn value_after<'a>(text: &'a str, keyword: &str) -> Option<&'a str> {
    let at = text.split_whitespace().position(|w| w == keyword)?;
    let word = text.split_whitespace().nth(at + 1)?;
    Some(word.trim_end_matches(['{', ';']).trim_matches('"'))
}

impl Key {
    /// Parse BIND's `key "NAME" { algorithm ALG; secret "BASE64"; };`.
    pub fn parse(text: &str) -> Result<Key, KeyFileError> {
        let name = value_after(text, "key").ok_or(KeyFileError::Missing("key \"NAME\""))?;
        let algorithm = value_after(text, "algorithm").ok_or(KeyFileError::Missing("algorithm"))?;
        let secret = value_after(text, "secret").ok_or(KeyFileError::Missing("secret"))?;
        let secret =
            data_encoding::BASE64.decode(secret.as_bytes()).map_err(|e| KeyFileError::Secret(e.to_string()))?;
        let algorithm = TsigAlgorithm::from_name(
            Name::from_ascii(algorithm).map_err(|_| KeyFileError::Algorithm(algorithm.to_string()))?,
        );
        if !algorithm.supported() {
            return Err(KeyFileError::Algorithm(algorithm.to_string()));
        }
        let name = Name::from_ascii(name).map_err(|_| KeyFileError::Name(name.to_string()))?;
        Ok(Key { name, algorithm, secret })
    }
}

/// What to do with the name's path records.
pub enum Change {
    /// Replace them all with this record.
    Publish(PathRecord),
    /// Add this record to those the name has.
    Add(PathRecord),
    /// Remove them all.
    Withdraw,
}

/// Why an update did not go through.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// The name is not in the zone.
    #[error("{name} is not in zone {zone}")]
    NotInZone {
        /// The name.
        name: String,
        /// The zone.
        zone: String,
    },
    /// A name that is not a DNS name.
    #[error("{0:?} is not a DNS name")]
    Name(String),
    /// The record could not be encoded.
    #[error("path record: {0}")]
    Record(String),
    /// The server could not be reached, did not answer in time, or its answer failed the TSIG check.
    #[error("no valid answer from {server}: {reason}")]
    Exchange {
        /// The primary.
        server: SocketAddr,
        /// What happened (a wrong key often shows here: the server's refusal is not signed with it).
        reason: String,
    },
    /// The server's answer is not signed with the key: how a server answers an update signed with a wrong
    /// secret or an unknown key (TSIG error BADSIG or BADKEY, with no MAC that hickory could check).
    #[error(
        "{server} refused TSIG key {key}: its answer is not signed with it, which is how a server refuses a wrong \
         secret or an unknown key name (BADSIG, BADKEY); nothing was changed ({detail})"
    )]
    KeyRefused {
        /// The primary.
        server: SocketAddr,
        /// The key's name.
        key: String,
        /// What hickory said.
        detail: String,
    },
    /// The server refused the update.
    #[error("{server} refused the update: {code}{hint}")]
    Refused {
        /// The primary.
        server: SocketAddr,
        /// Its response code.
        code: ResponseCode,
        /// What the code usually means.
        hint: &'static str,
    },
}

fn name(text: &str) -> Result<Name, UpdateError> {
    let mut n = Name::from_ascii(text).map_err(|_| UpdateError::Name(text.to_string()))?;
    n.set_fqdn(true);
    Ok(n)
}

/// The update message for `change` of `owner`'s path records in `zone`, records with `ttl`.
pub fn message(zone: &str, owner: &str, ttl: u32, change: &Change) -> Result<Message, UpdateError> {
    let (zone, owner) = (name(zone)?, name(owner)?);
    if !zone.zone_of(&owner) {
        return Err(UpdateError::NotInZone { name: owner.to_string(), zone: zone.to_string() });
    }
    let rr_type = RecordType::Unknown(RR_TYPE);
    let record = |r: &PathRecord| -> Result<Record, UpdateError> {
        let bytes = r.to_bytes().map_err(|e| UpdateError::Record(e.to_string()))?;
        let mut rec =
            Record::from_rdata(owner.clone(), ttl, RData::Unknown { code: rr_type, rdata: NULL::with(bytes) });
        rec.set_dns_class(DNSClass::IN);
        Ok(rec)
    };
    let mut all = Record::update0(owner.clone(), 0, rr_type);
    all.set_dns_class(DNSClass::IN);
    // An update without prerequisites: delete the RRset (Publish, Withdraw), then add (Publish, Add).
    let mut msg = update_message::delete_rrset(all, zone, true);
    match change {
        Change::Publish(r) => msg.add_update(record(r)?),
        Change::Add(r) => {
            // Keep the message's zone section, drop the deletion.
            msg.take_name_servers();
            msg.add_update(record(r)?);
        }
        Change::Withdraw => {}
    }
    Ok(msg)
}

/// Send `msg` to `server` over TCP, signed with `key`; wait at most `timeout`.
pub async fn send(server: SocketAddr, key: Key, msg: Message, timeout: Duration) -> Result<(), UpdateError> {
    let exchange = |reason: String| UpdateError::Exchange { server, reason };
    let key_name = key.name.to_string();
    let signer = TSigner::new(key.secret, key.algorithm, key.name, FUDGE).map_err(|e| exchange(e.to_string()))?;
    let (stream, handle) = TcpClientStream::new(server, None, Some(timeout), TokioRuntimeProvider::new());
    let (client, background) = Client::with_timeout(stream, handle, timeout, Some(Arc::new(signer)))
        .await
        .map_err(|e| exchange(e.to_string()))?;
    let background = tokio::spawn(background);
    let answer = client.send(DnsRequest::new(msg, DnsRequestOptions::default())).first_answer().await;
    background.abort();
    let answer = answer.map_err(|e| {
        let detail = e.to_string();
        // hickory's words when the answer's TSIG does not verify (BIND's BADSIG answer has an empty MAC).
        if ["TSIG", "HMAC", "tsig", "hmac"].iter().any(|w| detail.contains(w)) {
            UpdateError::KeyRefused { server, key: key_name.clone(), detail }
        } else {
            exchange(detail)
        }
    })?;
    match answer.response_code() {
        ResponseCode::NoError => Ok(()),
        code => Err(UpdateError::Refused {
            server,
            code,
            hint: match code {
                ResponseCode::NotAuth => ": the key is unknown to the server or its secret is wrong (TSIG)",
                ResponseCode::Refused => ": the zone does not allow updates with this key (allow-update)",
                ResponseCode::NotZone => ": the name is not in the zone",
                _ => "",
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libsrv6sock::wire::path::Route;

    const KEY: &str = "key \"srv6-update\" {\n\talgorithm hmac-sha256;\n\tsecret \"c2VjcmV0c2VjcmV0c2VjcmV0\";\n};\n";

    #[test]
    fn reads_tsig_keygen_output() {
        let k = Key::parse(KEY).unwrap();
        assert_eq!(k.name.to_ascii(), "srv6-update");
        assert_eq!(k.secret, b"secretsecretsecret");
        assert!(matches!(Key::parse("key \"k\" { secret \"AAAA\"; };"), Err(KeyFileError::Missing("algorithm"))));
        let e = Key::parse(&KEY.replace("hmac-sha256", "hmac-md5")).err().unwrap();
        assert!(e.to_string().contains("hmac-sha256"), "{e}");
        assert!(matches!(Key::parse(&KEY.replace("c2Vj", "!!")), Err(KeyFileError::Secret(_))));
    }

    #[test]
    fn publish_replaces_the_rrset_and_withdraw_deletes_it() {
        let r = PathRecord {
            priority: 10,
            covers: "::/0".parse().unwrap(),
            route: Route::Segments(vec!["fc00:f1::1".parse().unwrap()]),
            return_path: vec![],
        };
        let m = message("example.test", "www.example.test", 60, &Change::Publish(r.clone())).unwrap();
        let updates = m.name_servers();
        assert_eq!(updates.len(), 2);
        assert_eq!((updates[0].dns_class(), updates[0].ttl()), (DNSClass::ANY, 0));
        assert_eq!((updates[1].dns_class(), updates[1].ttl()), (DNSClass::IN, 60));
        assert_eq!(message("example.test", "www.example.test", 60, &Change::Add(r)).unwrap().name_servers().len(), 1);
        assert_eq!(message("example.test", "www.example.test", 0, &Change::Withdraw).unwrap().name_servers().len(), 1);
        let e = message("example.test", "www.other.test", 60, &Change::Withdraw).unwrap_err();
        assert!(matches!(e, UpdateError::NotInZone { .. }), "{e}");
    }
}
