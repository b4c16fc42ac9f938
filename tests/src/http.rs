//! HTTP servers for the tests: nginx serving random files, and an upload sink that answers with the
//! sha256 of what it received. Both log the peer address and port of every request, so that a test can
//! check which client address the server saw.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::process::Proc;
use crate::Net;

/// How long a server gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// nginx in a host, listening on `[::]:PORT`, serving a directory of files the test creates.
pub struct HttpServer {
    proc: Proc,
    root: PathBuf,
    access_log: PathBuf,
}

impl HttpServer {
    /// Start nginx in `host` with a configuration generated in a fresh directory of the test's
    /// directory; returns once it listens.
    pub fn start(net: &Net, host: &str, port: u16) -> Result<HttpServer> {
        HttpServer::start_under(net, host, port, &[])
    }

    /// As [`HttpServer::start`], nginx run by `wrapper` (e.g. `srv6run --reply-path --`).
    pub fn start_under(net: &Net, host: &str, port: u16, wrapper: &[String]) -> Result<HttpServer> {
        let dir = net.path(&format!("nginx-{host}"));
        let root = dir.join("www");
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let access_log = dir.join("access.log");
        let d = dir.display();
        // Everything nginx writes goes to `dir`, never to /var: parallel tests, no leftovers.
        // `user root`: the temporary directory is root's and not readable by nginx's default user.
        let conf = format!(
            r#"daemon off;
master_process on;
worker_processes 1;
user root;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 1024; }}
http {{
    log_format peer '$remote_addr $remote_port "$request" $status $body_bytes_sent';
    access_log {d}/access.log peer;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    default_type application/octet-stream;
    sendfile on;
    server {{
        listen [::]:{port};
        root {d}/www;
    }}
}}
"#
        );
        let proc = spawn_nginx_under(net, host, &dir, &conf, port, wrapper)?;
        Ok(HttpServer { proc, root, access_log })
    }

    /// Create `name` in the served directory with `size` random bytes; returns its sha256 (hex).
    pub fn add_random_file(&self, name: &str, size: u64) -> Result<String> {
        random_file(&self.root.join(name), size)
    }

    /// The access log so far: one line `ADDR PORT "REQUEST" STATUS BYTES` per request.
    pub fn access_log(&mut self) -> Result<String> {
        self.proc.ensure_running()?;
        std::fs::read_to_string(&self.access_log).with_context(|| format!("reading {}", self.access_log.display()))
    }
}

/// `tests/scripts/upload_sink.py` in a host: answers PUT/POST with `SHA256 LENGTH` of the body.
pub struct UploadSink {
    proc: Proc,
    log: PathBuf,
}

impl UploadSink {
    /// Start the sink in `host` on `[::]:PORT`; returns once it listens.
    pub fn start(net: &Net, host: &str, port: u16) -> Result<UploadSink> {
        UploadSink::start_under(net, host, port, &[])
    }

    /// As [`UploadSink::start`], run by `wrapper` (e.g. `srv6run --reply-path --`).
    pub fn start_under(net: &Net, host: &str, port: u16, wrapper: &[String]) -> Result<UploadSink> {
        let log = net.path(&format!("upload-sink-{host}.log"));
        std::fs::write(&log, "").with_context(|| format!("creating {}", log.display()))?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/upload_sink.py");
        let argv = wrapper.iter().map(String::as_str).chain(["/usr/bin/python3"]);
        let mut proc = net.cmd(host, argv).arg(script).arg(port.to_string()).arg(&log).spawn()?;
        wait_listening(net, host, port, &mut proc)?;
        Ok(UploadSink { proc, log })
    }

    /// The request log so far: one line `ADDR PORT METHOD PATH LENGTH SHA256` per upload.
    pub fn log(&mut self) -> Result<String> {
        self.proc.ensure_running()?;
        std::fs::read_to_string(&self.log).with_context(|| format!("reading {}", self.log.display()))
    }
}

/// Run nginx in `host` with configuration `conf` (written to `dir/nginx.conf`, prefix and error log in
/// `dir`); returns once something listens on `port`.
pub fn spawn_nginx(net: &Net, host: &str, dir: &Path, conf: &str, port: u16) -> Result<Proc> {
    spawn_nginx_under(net, host, dir, conf, port, &[])
}

/// As [`spawn_nginx`], nginx run by `wrapper`.
pub fn spawn_nginx_under(net: &Net, host: &str, dir: &Path, conf: &str, port: u16, wrapper: &[String]) -> Result<Proc> {
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).with_context(|| format!("writing {}", conf_path.display()))?;
    let argv = wrapper.iter().map(String::as_str).chain(["nginx", "-p"]);
    let mut proc =
        net.cmd(host, argv).arg(dir).arg("-e").arg(dir.join("error.log")).arg("-c").arg(&conf_path).spawn()?;
    wait_listening(net, host, port, &mut proc)?;
    Ok(proc)
}

fn wait_listening(net: &Net, host: &str, port: u16, proc: &mut Proc) -> Result<()> {
    // A single probe each turn, so that a server that died is noticed at the next one.
    proc.wait_until(&format!("TCP port {port} to listen in {host}"), START_TIMEOUT, |_| {
        Ok(net.wait_for_tcp_port(host, port, Duration::ZERO).is_ok())
    })
}

/// Write `size` random bytes to `path`; returns their sha256 (hex).
pub fn random_file(path: &Path, size: u64) -> Result<String> {
    let mut urandom = std::fs::File::open("/dev/urandom")?.take(size);
    let mut out = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 1 << 16];
    loop {
        let n = urandom.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
    }
    Ok(hex(&hasher.finalize()))
}

/// The sha256 (hex) of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
