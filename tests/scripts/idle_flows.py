#!/usr/bin/python3
"""Many concurrent flows that move some data, then sit idle (keep-alive connections), for the proxy's
resource test (tests/tests/proxy.rs). Single-threaded (selectors); every wait is bounded.

Server side (in the server's namespace; prints "listening" once ready):
  idle_flows.py serve PORT
    Per connection: read a line "SIZE\\n", answer SIZE bytes (byte i is i % 251), then keep the
    connection open, idle, until the client closes it.
Client side (through srv6run):
  idle_flows.py client HOST PORT N SIZE UNTIL_FILE
    Open N connections (in batches), ask each for SIZE bytes and check them; print "moved N" once all
    have their bytes, then hold them idle until UNTIL_FILE exists, close them all and print "closed N".
    Fails (exit 1) on a wrong byte, a closed connection or after 300 s.
  idle_flows.py hold HOST PORT SECS
    One connection: ask for 1000 bytes, read them, print "idle", then wait up to SECS for the connection
    to end and print "reset", "eof" or "open".
"""
import os
import resource
import selectors
import socket
import sys
import time

DEADLINE = time.monotonic() + 300


def raise_nofile():
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pattern(size):
    return bytes(i % 251 for i in range(size))


def check_deadline(what):
    if time.monotonic() > DEADLINE:
        sys.exit(f"timed out {what}")


def serve(port):
    raise_nofile()
    sel = selectors.DefaultSelector()
    ls = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("::", port))
    ls.listen(4096)
    ls.setblocking(False)
    sel.register(ls, selectors.EVENT_READ, None)
    print("listening", flush=True)
    cache = {}
    conns = {}  # socket -> [request bytes, reply left (memoryview) or None]
    while True:
        for key, events in sel.select(timeout=1.0):
            s = key.fileobj
            if s is ls:
                while True:
                    try:
                        c, _ = ls.accept()
                    except BlockingIOError:
                        break
                    c.setblocking(False)
                    conns[c] = [b"", None]
                    sel.register(c, selectors.EVENT_READ, None)
                continue
            st = conns[s]
            if events & selectors.EVENT_READ:
                try:
                    data = s.recv(65536)
                except (ConnectionError, BlockingIOError):
                    data = b""
                if not data:
                    sel.unregister(s)
                    s.close()
                    del conns[s]
                    continue
                st[0] += data
                if b"\n" in st[0] and st[1] is None:
                    size = int(st[0].split(b"\n", 1)[0])
                    if size not in cache:
                        cache[size] = pattern(size)
                    st[1] = memoryview(cache[size])
                    sel.modify(s, selectors.EVENT_READ | selectors.EVENT_WRITE, None)
            if events & selectors.EVENT_WRITE and st[1] is not None and len(st[1]):
                try:
                    n = s.send(st[1])
                    st[1] = st[1][n:]
                except BlockingIOError:
                    pass
                if not len(st[1]):
                    sel.modify(s, selectors.EVENT_READ, None)


def client(host, port, n, size, until):
    raise_nofile()
    want = pattern(size)
    sel = selectors.DefaultSelector()
    got = {}
    done = 0
    opened = 0
    batch = 200
    while done < n:
        check_deadline(f"moving data ({done}/{n} done)")
        # Keep at most `batch` connections in their data phase, so the SYN queues never overflow.
        while opened < n and opened - done < batch:
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect((host, port))
            except BlockingIOError:
                pass
            got[s] = None  # None: connecting
            sel.register(s, selectors.EVENT_WRITE, None)
            opened += 1
        for key, events in sel.select(timeout=1.0):
            s = key.fileobj
            if got[s] is None:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    sys.exit(f"connect failed: {os.strerror(err)}")
                s.send(f"{size}\n".encode())
                got[s] = bytearray()
                sel.modify(s, selectors.EVENT_READ, None)
                continue
            data = s.recv(65536)
            if not data:
                sys.exit(f"connection closed after {len(got[s])} of {size} bytes")
            got[s] += data
            if len(got[s]) >= size:
                if bytes(got[s]) != want:
                    sys.exit("wrong bytes")
                got[s] = b""
                sel.unregister(s)
                done += 1
    print(f"moved {n}", flush=True)
    while not os.path.exists(until):
        check_deadline("waiting to close")
        time.sleep(0.1)
    for s in got:
        s.close()
    print(f"closed {n}", flush=True)


def hold(host, port, secs):
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(b"1000\n")
    got = b""
    while len(got) < 1000:
        data = s.recv(1000 - len(got))
        if not data:
            sys.exit("closed before the data")
        got += data
    print("idle", flush=True)
    s.settimeout(secs)
    try:
        print("eof" if not s.recv(1) else "data", flush=True)
    except ConnectionResetError:
        print("reset", flush=True)
    except socket.timeout:
        print("open", flush=True)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    elif len(sys.argv) == 7 and sys.argv[1] == "client":
        client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    elif len(sys.argv) == 5 and sys.argv[1] == "hold":
        hold(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
