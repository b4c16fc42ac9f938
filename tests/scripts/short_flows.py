#!/usr/bin/env python3
"""Many short TCP flows for the reply-steering table test.

serve PORT: accept, send 'ok', close (after the client closed: both FINs cross).
connect SERVER PORT WAYPOINT N: N sequential flows, each with an SRH [SERVER, WAYPOINT] (segments left 1)
and a return-path TLV (124) [WAYPOINT]; prints how many got 'ok'.
"""
import ipaddress
import socket
import sys


def srh(server, waypoint):
    # SRH: next header (kernel fills), hdr ext len, type 4, segments left 1, last entry 1, flags, tag;
    # segments [server, waypoint]; TLV 124 (2 reserved bytes + waypoint); PadN to a multiple of 8.
    segs = ipaddress.IPv6Address(server).packed + ipaddress.IPv6Address(waypoint).packed
    tlv = bytes([124, 18, 0, 0]) + ipaddress.IPv6Address(waypoint).packed
    body = segs + tlv
    pad = (-(8 + len(body))) % 8
    if pad:
        body += bytes([4, pad - 2]) + bytes(pad - 2)
    return bytes([0, (8 + len(body)) // 8 - 1, 4, 1, 1, 0, 0, 0]) + body


def serve(port):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
    s.listen(512)
    while True:
        c, _ = s.accept()
        with c:
            c.sendall(b"ok")
            c.settimeout(10)
            try:
                while c.recv(4096):
                    pass
            except OSError:
                pass


def connect(server, port, waypoint, n):
    opt = srh(server, waypoint)
    done = 0
    for _ in range(n):
        c = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        c.setsockopt(socket.IPPROTO_IPV6, 57, opt)  # IPV6_RTHDR
        c.settimeout(10)
        try:
            c.connect((server, port))
            got = b""
            while len(got) < 2:
                b = c.recv(2)
                if not b:
                    break
                got += b
            c.shutdown(socket.SHUT_WR)
            while c.recv(16):
                pass
            done += got == b"ok"
        except OSError as e:
            print(e, file=sys.stderr)
        finally:
            c.close()
    print(done)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        connect(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
