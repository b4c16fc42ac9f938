//! `--hmac-key KEYID[:FILE]`: the SRH's HMAC TLV is computed by the kernel on send (`ipv6_push_rthdr4`
//! calls `seg6_push_hmac` after it wrote the connect() address into `segments[0]`, so the digest covers
//! the segment list as sent), with the key `ip sr hmac` configured in the network namespace. The shim only
//! sets the H flag and reserves the TLV (`SRV6_HMAC_KEY`); here srv6run makes sure the key exists.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};
use libsrv6sock::hmac_keys::HmacKeys;

/// The value of `--hmac-key`.
#[derive(Debug, Clone)]
pub struct HmacKey {
    /// The key id.
    pub id: u32,
    /// The key file holding its secret, if given.
    pub file: Option<PathBuf>,
}

/// Parse `KEYID[:FILE]`.
pub fn parse_hmac_key(s: &str) -> Result<HmacKey, String> {
    let (id, file) = match s.split_once(':') {
        Some((id, file)) if !file.is_empty() => (id, Some(PathBuf::from(file))),
        Some(_) => return Err("expected KEYID:FILE, FILE is empty".into()),
        None => (s, None),
    };
    let id = id.parse().map_err(|_| format!("key id {id:?} is not a number 0 to 4294967295"))?;
    Ok(HmacKey { id, file })
}

/// One key of `ip sr hmac show`: `hmac 7 algo sha256 secret "s3cret"`.
fn configured(id: u32) -> Result<Option<(String, Vec<u8>)>> {
    let out = Command::new("ip").args(["sr", "hmac", "show"]).output().context("running ip sr hmac show")?;
    ensure!(out.status.success(), "ip sr hmac show: {}", String::from_utf8_lossy(&out.stderr).trim());
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let ["hmac", key, "algo", algo, "secret", secret] = words.as_slice() {
            if key.parse() == Ok(id) {
                return Ok(Some((algo.to_string(), secret.trim_matches('"').as_bytes().to_vec())));
            }
        }
    }
    Ok(None)
}

/// Make sure the namespace has key `key.id`: with a file, configure it when absent (and refuse a key of the
/// same id with another secret or algorithm); without, only warn when it is missing (the kernel then
/// sends a zero digest, which verifiers refuse).
pub fn ensure_key(key: &HmacKey) -> Result<()> {
    let Some(file) = &key.file else {
        match configured(key.id) {
            Ok(Some(_)) => {}
            Ok(None) => eprintln!(
                "srv6run: warning: no HMAC key {0} in this network namespace (ip sr hmac set {0} sha256): \
                 SYNs will carry a zero HMAC",
                key.id
            ),
            Err(e) => eprintln!("srv6run: warning: cannot check HMAC key {}: {e:#}", key.id),
        }
        return Ok(());
    };
    let keys = HmacKeys::from_file(file)?;
    let secret = keys.get(key.id).with_context(|| format!("{}: no key {}", file.display(), key.id))?;
    match configured(key.id)? {
        Some((algo, s)) if algo == "sha256" && s == secret => return Ok(()),
        Some((algo, _)) => bail!(
            "HMAC key {} is already configured in this network namespace ({algo}, another secret or algorithm): \
             left as is; remove it (ip sr hmac set {} with a blank secret) or use another key id",
            key.id,
            key.id
        ),
        None => {}
    }
    let mut cmd = Command::new("ip");
    cmd.args(["sr", "hmac", "set", &key.id.to_string(), "sha256"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setsid() is async-signal-safe; it only detaches the child from the terminal, so that ip's
    // getpass() reads the secret from the pipe instead of prompting on the terminal.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("running ip sr hmac set")?;
    child.stdin.take().context("ip's stdin")?.write_all(secret)?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "ip sr hmac set {} sha256 (root needed): {}",
        key.id,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_and_optional_file() {
        let k = parse_hmac_key("7").unwrap();
        assert_eq!((k.id, k.file), (7, None));
        let k = parse_hmac_key("7:/etc/k").unwrap();
        assert_eq!((k.id, k.file), (7, Some(PathBuf::from("/etc/k"))));
        assert!(parse_hmac_key("x").is_err());
        assert!(parse_hmac_key("7:").is_err());
    }
}
