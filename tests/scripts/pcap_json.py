#!/usr/bin/python3
"""Decode the IPv6/TCP packets of a pcap file with scapy and print one JSON object per packet.

An oracle independent of libsrv6sock for the end-to-end tests (tests/src/oracle.rs reads this output).
Usage: pcap_json.py FILE.pcap

Each line: {"frame", "src", "dst", "sport", "dport", "flags", "payload_len", "srh"} where "srh" is null or
{"segleft", "lastentry", "flags", "tag", "segments", "tlvs"}; "tlvs" lists the non-padding TLVs in wire
order as {"type", "value" (hex), "return_path"}; "return_path" is null unless the TLV is the SRv6Pipes
return-path TLV (type 124: 2 reserved bytes, then 16-byte addresses), decoded here independently.
ICMPv6 errors are skipped (their quoted TCP header is not a TCP packet).
"""
import ipaddress
import json
import sys

from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6PacketTooBig, ICMPv6ParamProblem, ICMPv6TimeExceeded
from scapy.layers.inet6 import IPv6, IPv6ExtHdrSegmentRouting
from scapy.layers.inet import TCP
from scapy.utils import PcapReader

RETURN_PATH = 124
PAD1, PADN = 0, 4
ICMP_ERRORS = (ICMPv6DestUnreach, ICMPv6PacketTooBig, ICMPv6ParamProblem, ICMPv6TimeExceeded)


def srh_json(srh):
    wire = bytes(srh)
    tlvs = []
    for tlv in srh.tlv_objects:
        raw = bytes(tlv)
        tlv_type = raw[0]
        if tlv_type in (PAD1, PADN):
            continue
        value = raw[2:2 + raw[1]]
        return_path = None
        if tlv_type == RETURN_PATH:
            addrs = value[2:]
            if len(addrs) % 16:
                raise ValueError(f"return-path TLV value of {len(value)} bytes is not 2 + 16*n")
            return_path = [str(ipaddress.IPv6Address(addrs[i:i + 16])) for i in range(0, len(addrs), 16)]
        tlvs.append({"type": tlv_type, "value": value.hex(), "return_path": return_path})
    return {
        "segleft": srh.segleft,
        "lastentry": srh.lastentry,
        # scapy splits the flags byte into bit fields whose names changed across versions: read the byte.
        "flags": wire[5],
        "tag": srh.tag,
        "segments": [str(ipaddress.IPv6Address(a)) for a in srh.addresses],
        "tlvs": tlvs,
    }


def main():
    with PcapReader(sys.argv[1]) as reader:
        for frame, pkt in enumerate(reader, 1):
            if IPv6 not in pkt or TCP not in pkt or any(layer in pkt for layer in ICMP_ERRORS):
                continue
            ip, tcp = pkt[IPv6], pkt[TCP]
            srh = pkt.getlayer(IPv6ExtHdrSegmentRouting)
            print(json.dumps({
                "frame": frame,
                "src": ip.src,
                "dst": ip.dst,
                "sport": tcp.sport,
                "dport": tcp.dport,
                "flags": int(tcp.flags) & 0xFF,
                "payload_len": len(bytes(tcp.payload)),
                "srh": srh_json(srh) if srh is not None else None,
            }))


if __name__ == "__main__":
    main()
