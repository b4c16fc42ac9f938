#!/usr/bin/python3
"""Flows that stop making progress, for the proxy's timeout tests (tests/tests/proxy_limits.rs).

Server side (in the server's namespace; prints "listening" once ready):
  stuck_flows.py serve PORT
    Per connection, the first line picks the behaviour:
      "silent\\n"  read and discard until the peer finishes; never send; hold the connection open
                    (at most 120 s) until it is reset
      "flood\\n"   send bytes until the connection fails
      "echo\\n"    answer each chunk with the same bytes
Client side (through srv6run); each prints one of "reset", "eof" or "open" (nothing happened within
SECS), preceded by "connected" once the connection is up:
  stuck_flows.py halfclose HOST PORT SECS     "silent", then shutdown(SHUT_WR), wait for the end
  stuck_flows.py noread HOST PORT SECS        "flood", never read (the window closes), wait for a reset
  stuck_flows.py after HOST PORT FILE SECS    "echo" and one echoed chunk, then once FILE exists send
                                              64 KiB and wait for the echo or the end
  stuck_flows.py wait HOST PORT SECS          "echo" and a chunk (its echo is read too), then wait for
                                              the end
  stuck_flows.py many HOST PORT N             N short connections in a row ("echo", one chunk, close);
                                              prints "done N failed F"
Every wait is bounded.
"""
import errno
import os
import socket
import sys
import threading
import time


def readline(c):
    line = b""
    while not line.endswith(b"\n"):
        d = c.recv(1)
        if not d:
            break
        line += d
    return line.decode().strip()


def handle(c):
    try:
        mode = readline(c)
        if mode == "silent":
            while c.recv(65536):
                pass
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                time.sleep(0.1)
        elif mode == "flood":
            chunk = b"x" * 65536
            while True:
                c.sendall(chunk)
        elif mode == "echo":
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
    except OSError:
        pass
    finally:
        c.close()


def serve(port):
    ls = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("::", port))
    ls.listen(1024)
    print("listening", flush=True)
    while True:
        c, _ = ls.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()


def connect(host, port, mode):
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(mode.encode() + b"\n")
    return s


def echo_once(s):
    s.sendall(b"ping")
    got = b""
    while len(got) < 4:
        d = s.recv(4 - len(got))
        if not d:
            raise ConnectionError("closed before the echo")
        got += d


def wait_end(s, secs):
    """Read (discarding) until the connection ends or SECS pass."""
    deadline = time.monotonic() + secs
    try:
        while time.monotonic() < deadline:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                if not s.recv(65536):
                    return "eof"
            except socket.timeout:
                pass
        return "open"
    except ConnectionResetError:
        return "reset"


def report(what, started):
    print(f"{what} {time.monotonic() - started:.1f}", flush=True)


def main():
    a = sys.argv[1:]
    if len(a) == 2 and a[0] == "serve":
        serve(int(a[1]))
    elif len(a) == 4 and a[0] == "halfclose":
        s = connect(a[1], int(a[2]), "silent")
        s.shutdown(socket.SHUT_WR)
        print("connected", flush=True)
        report(wait_end(s, float(a[3])), time.monotonic())
    elif len(a) == 4 and a[0] == "noread":
        s = connect(a[1], int(a[2]), "flood")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        print("connected", flush=True)
        started = time.monotonic()
        deadline = started + float(a[3])
        while time.monotonic() < deadline:
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err == errno.ECONNRESET:
                report("reset", started)
                return
            if err:
                report(f"error-{err}", started)
                return
            time.sleep(0.1)
        report("open", started)
    elif len(a) == 5 and a[0] == "after":
        s = connect(a[1], int(a[2]), "echo")
        echo_once(s)
        print("connected", flush=True)
        deadline = time.monotonic() + 60
        while not os.path.exists(a[3]) and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        s.sendall(b"y" * 65536)
        report(wait_end(s, float(a[4])), started)
    elif len(a) == 4 and a[0] == "wait":
        started = time.monotonic()
        try:
            # A reset may already be there when connect() checks the handshake (a flow ended at once).
            s = socket.create_connection((a[1], int(a[2])), timeout=10)
        except ConnectionResetError:
            print("connected", flush=True)
            report("reset", started)
            return
        print("connected", flush=True)
        try:
            s.sendall(b"echo\nping")
        except ConnectionResetError:
            report("reset", started)
            return
        except BrokenPipeError:
            report("eof", started)
            return
        report(wait_end(s, float(a[3])), started)
    elif len(a) == 4 and a[0] == "many":
        failed = 0
        for _ in range(int(a[3])):
            try:
                s = connect(a[1], int(a[2]), "echo")
                echo_once(s)
                s.close()
            except OSError:
                failed += 1
        print(f"done {a[3]} failed {failed}", flush=True)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
