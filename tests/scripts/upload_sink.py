#!/usr/bin/python3
"""HTTP upload sink for the end-to-end tests: answers a PUT or POST with the sha256 and length of its body.

Usage: upload_sink.py PORT LOGFILE
Listens on [::]:PORT. The response body is "SHA256HEX LENGTH\n". Every request appends
"PEER_ADDR PEER_PORT METHOD PATH LENGTH SHA256HEX" to LOGFILE, so a test can see which address the
server saw (the client's, through a transparent proxy). Bodies may be sent with Content-Length or chunked.
Runs until killed.
"""
import hashlib
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 1 << 16


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def body_chunks(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                left = size
                while left:
                    data = self.rfile.read(min(left, CHUNK))
                    if not data:
                        raise ConnectionError("body ended inside a chunk")
                    left -= len(data)
                    yield data
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length", "0"))
            while left:
                data = self.rfile.read(min(left, CHUNK))
                if not data:
                    raise ConnectionError(f"body ended {left} bytes early")
                left -= len(data)
                yield data

    def sink(self):
        digest, length = hashlib.sha256(), 0
        for data in self.body_chunks():
            digest.update(data)
            length += len(data)
        answer = f"{digest.hexdigest()} {length}\n".encode()
        with open(LOG, "a") as log:
            log.write(f"{self.client_address[0]} {self.client_address[1]} {self.command} {self.path} "
                      f"{length} {digest.hexdigest()}\n")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_PUT = sink
    do_POST = sink

    def log_message(self, *args):
        pass  # the LOGFILE above is the log


class Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True


if __name__ == "__main__":
    LOG = sys.argv[2]
    Server(("::", int(sys.argv[1])), Sink).serve_forever()
