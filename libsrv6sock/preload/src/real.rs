//! The real libc functions behind the hooks, found with `dlsym(RTLD_NEXT)`.

use std::sync::atomic::{AtomicPtr, Ordering};

/// A lazily resolved symbol of the next object in the search order.
pub struct Real {
    name: &'static [u8],
    ptr: AtomicPtr<libc::c_void>,
}

impl Real {
    const fn new(name: &'static [u8]) -> Self {
        Real { name, ptr: AtomicPtr::new(std::ptr::null_mut()) }
    }

    /// The symbol's address (null if no later object defines it).
    pub fn get(&self) -> *mut libc::c_void {
        let p = self.ptr.load(Ordering::Acquire);
        if !p.is_null() {
            return p;
        }
        // SAFETY: `name` is a NUL-terminated literal; RTLD_NEXT asks for the definition after this library.
        let p = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr().cast()) };
        self.ptr.store(p, Ordering::Release);
        p
    }
}

pub static CONNECT: Real = Real::new(b"connect\0");
pub static SENDTO: Real = Real::new(b"sendto\0");
pub static SENDMSG: Real = Real::new(b"sendmsg\0");
pub static GETADDRINFO: Real = Real::new(b"getaddrinfo\0");
pub static SOCKET: Real = Real::new(b"socket\0");
pub static CLOSE: Real = Real::new(b"close\0");
pub static DUP: Real = Real::new(b"dup\0");
pub static DUP2: Real = Real::new(b"dup2\0");
pub static DUP3: Real = Real::new(b"dup3\0");
pub static LISTEN: Real = Real::new(b"listen\0");
pub static ACCEPT: Real = Real::new(b"accept\0");
pub static ACCEPT4: Real = Real::new(b"accept4\0");
pub static SETSOCKOPT: Real = Real::new(b"setsockopt\0");

/// Resolve every symbol now, in the constructor, so hooks normally never call `dlsym`.
pub fn resolve_all() {
    for r in [
        &CONNECT,
        &SENDTO,
        &SENDMSG,
        &GETADDRINFO,
        &SOCKET,
        &CLOSE,
        &DUP,
        &DUP2,
        &DUP3,
        &LISTEN,
        &ACCEPT,
        &ACCEPT4,
        &SETSOCKOPT,
    ] {
        r.get();
    }
}
