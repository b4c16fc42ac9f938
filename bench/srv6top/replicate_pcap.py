#!/usr/bin/python3
"""Write OUT.pcap holding the packets of IN.pcap repeated until it has COUNT packets, each copy shifted in
time so that flows look like many seconds of traffic; the decode benchmark's input.

Usage: replicate_pcap.py IN.pcap OUT.pcap COUNT
"""
import struct
import sys


def endian(data):
    """The byte order of a pcap file (microsecond or nanosecond magic)."""
    return "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"


def records(data):
    """(ts_sec, ts_usec, wirelen, bytes) of each record of a pcap file."""
    order = endian(data)
    off = 24
    while off + 16 <= len(data):
        sec, usec, caplen, wirelen = struct.unpack(order + "IIII", data[off:off + 16])
        yield sec, usec, wirelen, data[off + 16:off + 16 + caplen]
        off += 16 + caplen


def main():
    src, dst, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    data = open(src, "rb").read()
    order = endian(data)
    recs = list(records(data))
    if not recs:
        sys.exit(f"{src}: no packets")
    with open(dst, "wb") as out:
        out.write(data[:24])
        written, copy = 0, 0
        while written < count:
            for sec, usec, wirelen, body in recs:
                if written == count:
                    break
                # Each copy one millisecond later: a steady stream of the same connections.
                usec_total = usec + copy * 1000
                out.write(struct.pack(order + "IIII", sec + usec_total // 1_000_000, usec_total % 1_000_000,
                                      len(body), wirelen))
                out.write(body)
                written += 1
            copy += 1


if __name__ == "__main__":
    main()
