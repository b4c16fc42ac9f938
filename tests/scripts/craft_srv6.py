#!/usr/bin/python3
"""Write a pcap of crafted SRv6 traffic for the srv6top tests: two well-formed steered TCP connections and
three malformed SRHs, each made byte by byte so that the defect is exactly the one named.

Usage: craft_srv6.py OUT.pcap

Connection A: [fc00:1::1]:40000 -> [fc00:4::2]:8080 through xor(0x5a) on fc00:f1::/80 and fc00:f2::/80,
with a return-path TLV; 3 data packets of 100 bytes up, 2 of 1000 bytes down.
Connection B: [fc00:1::1]:40001 -> [fc00:4::2]:22 through copy on fc00:f1::/80, no TLV; 1 data packet up.
Malformed (each from [fc00:1::9]):
  1. segments left 5 with last entry 1 (RFC 8754: segments left <= last entry);
  2. hdr ext len says 6 (56 bytes) but the packet ends after 24;
  3. a TLV whose length runs past the end of the SRH.
"""
import ipaddress
import struct
import sys

from scapy.layers.inet import TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import wrpcap

CLIENT, SERVER = "fc00:1::1", "fc00:4::2"
# Fixed MACs: scapy would otherwise look them up (and warn) for every packet.
ETHER = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
XOR1, XOR2, COPY1 = "fc00:f1::2:0:5a", "fc00:f2::2:0:5a", "fc00:f1::1:0:0"


def a(s):
    return ipaddress.IPv6Address(s).packed


def srh(segments, segleft, tlvs=b"", next_header=6, last_entry=None, hdr_len=None):
    """An SRH: segments in SRH order (final destination first)."""
    body = b"".join(a(s) for s in segments) + tlvs
    if hdr_len is None:
        assert len(body) % 8 == 0, "TLVs must tile the header"
        hdr_len = len(body) // 8
    if last_entry is None:
        last_entry = len(segments) - 1
    return struct.pack("!BBBBBBH", next_header, hdr_len, 4, segleft, last_entry, 0, 0) + body


def return_path_tlv(addrs):
    value = b"\0\0" + b"".join(a(s) for s in addrs)
    tlv = bytes([124, len(value)]) + value
    pad = (-len(tlv)) % 8
    # PadN of `pad` bytes (pad is 6 here: 2 + 2 + 32 = 36 -> 40 needs 4; keep general for 2..7).
    if pad == 1:
        raise ValueError("one byte of padding cannot be a PadN")
    return tlv + (bytes([4, pad - 2]) + bytes(pad - 2) if pad else b"")


def steered(src, sport, dport, segments, segleft, flags, payload=b"", tlvs=b""):
    header = srh(segments, segleft, tlvs)
    tcp = bytes(TCP(sport=sport, dport=dport, flags=flags, seq=1000, ack=1) / Raw(payload))
    return Ether(**ETHER) / IPv6(src=src, dst=segments[segleft], nh=43) / Raw(header + tcp)


def plain(src, dst, sport, dport, flags, payload=b""):
    return Ether(**ETHER) / IPv6(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags) / Raw(payload)


def main():
    rp = return_path_tlv([XOR1, XOR2])
    segs_a = [SERVER, XOR2, XOR1]
    pkts = [
        steered(CLIENT, 40000, 8080, segs_a, 2, "S", tlvs=rp),
        plain(SERVER, CLIENT, 8080, 40000, "SA"),
        steered(CLIENT, 40000, 8080, segs_a, 2, "A", tlvs=rp),
    ]
    for _ in range(3):
        pkts.append(steered(CLIENT, 40000, 8080, segs_a, 2, "PA", b"x" * 100, tlvs=rp))
    for _ in range(2):
        pkts.append(plain(SERVER, CLIENT, 8080, 40000, "PA", b"y" * 1000))
    pkts.append(steered(CLIENT, 40001, 22, [SERVER, COPY1], 1, "S"))
    pkts.append(steered(CLIENT, 40001, 22, [SERVER, COPY1], 1, "PA", b"z" * 10))
    bad_src = "fc00:1::9"
    # 1. segments left beyond the last entry.
    bad1 = srh([SERVER, XOR1], 5, last_entry=1)
    # 2. the header claims 56 bytes, only 24 follow (and no TCP).
    bad2 = srh([SERVER], 0, hdr_len=6)
    # 3. a TLV of length 200 in an 8-byte TLV area.
    bad3 = srh([SERVER], 0, tlvs=bytes([124, 200]) + bytes(6))
    for i, header in enumerate([bad1, bad2, bad3]):
        pkts.append(Ether(**ETHER) / IPv6(src=bad_src, dst=XOR1, nh=43, plen=len(header)) / Raw(header))
    pkts.append(plain(SERVER, CLIENT, 8080, 40000, "FA"))
    wrpcap(sys.argv[1], pkts)


if __name__ == "__main__":
    main()
