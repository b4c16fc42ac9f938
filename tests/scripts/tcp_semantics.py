#!/usr/bin/python3
"""TCP semantics helper for the proxy tests (tests/tests/proxy.rs).

Server side (run in the server's namespace; prints "listening" once ready, then one line per event):
  tcp_semantics.py serve PORT
    Per connection, the first line the client sends picks the behaviour:
      "halfclose\\n"  read until EOF, then answer "N SHA256\\n" of what followed the line, then close
      "reset\\n"      answer "bye\\n", then close with a reset (SO_LINGER 0)
      "wait\\n"       read until EOF or an error; print "peer-reset" or "peer-eof"
      "close\\n"      answer "bye\\n" and close first (the server is the active closer)
    Every connection prints "peer ADDR PORT".
Client side (run through srv6run):
  tcp_semantics.py halfclose HOST PORT BYTES   send BYTES, shutdown(SHUT_WR), print the reply and "expect N SHA"
  tcp_semantics.py reset HOST PORT             print "client-saw-reset" when the server's reset arrives
  tcp_semantics.py abort HOST PORT             send, then reset the connection; print "client-reset-sent"
  tcp_semantics.py reuse HOST PORT LOCALPORT N  N connections in a row from the same local port, each
                                               answered and closed by the server first; print "reuse-ok N"
                                               or fail on a connection slower than 2 s
  tcp_semantics.py badsrh HOST PORT SID         connect with an SRH [HOST, SID] whose return-path TLV (type 124)
                                               has a 3-byte value (the kernel accepts it, RFC-wise it is
                                               malformed); print "refused" when the connection is reset or
                                               closed without an answer
Everything is bounded by socket timeouts; exit status 0 unless something unexpected happens.
"""
import hashlib
import socket
import struct
import sys
import threading
import time

TIMEOUT = 20


def rst(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def readline(c):
    line = b""
    while not line.endswith(b"\n"):
        d = c.recv(1)
        if not d:
            break
        line += d
    return line.decode().strip()


def handle(c, addr):
    print("peer", addr[0], addr[1], flush=True)
    c.settimeout(TIMEOUT)
    try:
        mode = readline(c)
        if mode == "halfclose":
            h, n = hashlib.sha256(), 0
            while True:
                d = c.recv(65536)
                if not d:
                    break
                h.update(d)
                n += len(d)
            c.sendall(f"{n} {h.hexdigest()}\n".encode())
            c.close()
        elif mode == "reset":
            c.sendall(b"bye\n")
            time.sleep(0.2)
            rst(c)
        elif mode == "close":
            c.sendall(b"bye\n")
            c.close()
        elif mode == "wait":
            try:
                while c.recv(65536):
                    pass
                print("peer-eof", flush=True)
            except ConnectionResetError:
                print("peer-reset", flush=True)
            c.close()
    except OSError as e:
        print("server-error", e, flush=True)


def serve(port):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
    s.listen(64)
    print("listening", flush=True)
    while True:
        c, addr = s.accept()
        threading.Thread(target=handle, args=(c, addr), daemon=True).start()


def bad_srh(dst, sid):
    segs = socket.inet_pton(socket.AF_INET6, dst) + socket.inet_pton(socket.AF_INET6, sid)
    tlvs = bytes([124, 3, 0, 0, 0]) + bytes([4, 1, 0])  # malformed return path, then PadN to 8 octets
    body = segs + tlvs
    return bytes([0, len(body) // 8, 4, 1, 1, 0, 0, 0]) + body


def main():
    mode = sys.argv[1]
    if mode == "serve":
        serve(int(sys.argv[2]))
        return
    host, port = sys.argv[2], int(sys.argv[3])
    if mode == "badsrh":
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.settimeout(TIMEOUT)
        s.setsockopt(socket.IPPROTO_IPV6, 57, bad_srh(host, sys.argv[4]))
        try:
            s.connect((host, port))
            s.sendall(b"wait\n")
            print("refused" if not s.recv(100) else "answered")
        except (ConnectionResetError, ConnectionRefusedError, BrokenPipeError):
            print("refused")
        return
    if mode == "reuse":
        local, n = int(sys.argv[4]), int(sys.argv[5])
        for i in range(n):
            start = time.monotonic()
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.settimeout(2)
            s.bind(("::", local))
            s.connect((host, port))
            s.sendall(b"close\n")
            reply = b""
            while True:  # read until the server's FIN, then close: this side never holds TIME_WAIT
                d = s.recv(100)
                if not d:
                    break
                reply += d
            s.close()
            took = time.monotonic() - start
            if reply != b"bye\n" or took > 2:
                sys.exit(f"connection {i} from port {local}: reply {reply!r} after {took:.2f} s")
        print("reuse-ok", n)
        return
    s = socket.create_connection((host, port), timeout=TIMEOUT)
    if mode == "halfclose":
        data = bytes((i * 7 + 3) % 251 for i in range(int(sys.argv[4])))
        s.sendall(b"halfclose\n" + data)
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            reply += d
        print("reply", reply.decode().strip())
        print("expect", len(data), hashlib.sha256(data).hexdigest())
    elif mode == "reset":
        s.sendall(b"reset\n")
        try:
            while s.recv(65536):
                pass
            print("client-saw-eof")
        except ConnectionResetError:
            print("client-saw-reset")
    elif mode == "abort":
        s.sendall(b"wait\nhello")
        time.sleep(0.5)
        rst(s)
        print("client-reset-sent")


if __name__ == "__main__":
    main()
