//! libsrv6sock.so (in progress).
