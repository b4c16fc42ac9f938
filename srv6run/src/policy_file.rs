//! The TOML policy file: read here, in srv6run only, and handed to the shim compiled
//! (`SRV6_COMPILED_POLICY`), so that no host program runs a TOML parser. The format (`libsrv6sock(7)`):
//!
//! ```toml
//! fail = "closed"                  # optional: what to do when a path cannot be attached (open | closed)
//!
//! [[rule]]
//! dst = "fc00:4::/64"              # optional, default ::/0 (an address alone is a /128)
//! port = 80                        # optional
//! name = "www.example.net"         # optional: the host name the program resolved with getaddrinfo()
//! proto = "tcp"                    # optional: tcp (default), udp or any
//! segments = ["fc00:e1::1", "fc00:e2::1"]   # waypoints in the order they are visited
//! return-path = "reverse"          # optional: "reverse" (default), "none", or waypoints back, in visit order
//! tag = 0                          # optional SRH tag
//! flags = 0                        # optional SRH flags
//! hmac-key = 7                     # optional: key id of an HMAC TLV the kernel fills in (`ip sr hmac`)
//! ```

use std::net::Ipv6Addr;
use std::path::{Path as FsPath, PathBuf};

use libsrv6sock::policy::{FailMode, Path, Policy, PolicyError, Proto, ReturnPath, Rule, ENV_POLICY, SYSTEM_POLICY};
use libsrv6sock::wire::prefix::Ipv6Prefix;
use serde::Deserialize;

/// Why a policy file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    /// The policy file could not be read (the OS error is the source, not repeated in the message).
    #[error("cannot read policy file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown or mistyped keys (the message gives line and column).
    #[error("policy file {path}: {message}")]
    Syntax {
        /// The file, or `<string>`.
        path: String,
        /// What the TOML parser said, with line and column.
        message: String,
    },
    /// A rule that parses but cannot be used.
    #[error(transparent)]
    Rule(#[from] PolicyError),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    #[serde(default, deserialize_with = "parsed")]
    fail: Option<FailMode>,
    #[serde(default)]
    rule: Vec<FileRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileRule {
    #[serde(default, deserialize_with = "parsed")]
    dst: Option<Ipv6Prefix>,
    port: Option<u16>,
    name: Option<String>,
    #[serde(default, deserialize_with = "parsed")]
    proto: Option<Proto>,
    segments: Vec<Ipv6Addr>,
    return_path: Option<FileReturnPath>,
    #[serde(default)]
    tag: u16,
    #[serde(default)]
    flags: u8,
    hmac_key: Option<u32>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FileReturnPath {
    Keyword(String),
    List(Vec<Ipv6Addr>),
}

/// A value written as a string and read with its `FromStr` (`"closed"`, `"udp"`, `"fc00:4::/64"`).
fn parsed<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let s = String::deserialize(d)?;
    s.parse().map(Some).map_err(serde::de::Error::custom)
}

/// Parse a policy from TOML text; `origin` names it in errors (a file path).
pub fn from_toml(text: &str, origin: &str) -> Result<Policy, PolicyFileError> {
    let file: FileFormat = toml::from_str(text)
        .map_err(|e| PolicyFileError::Syntax { path: origin.to_string(), message: e.to_string() })?;
    let rules = file
        .rule
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let origin = format!("{origin} rule #{}", i + 1);
            let return_path = match r.return_path {
                None => ReturnPath::Reverse,
                Some(FileReturnPath::List(v)) => ReturnPath::Explicit(v),
                Some(FileReturnPath::Keyword(k)) => match k.as_str() {
                    "reverse" => ReturnPath::Reverse,
                    "none" => ReturnPath::None,
                    other => {
                        return Err(PolicyError::Rule {
                            origin,
                            reason: format!("return-path {other:?}: use \"reverse\", \"none\" or a list of addresses"),
                        })
                    }
                },
            };
            let rule = Rule {
                dst: r.dst.unwrap_or(Ipv6Prefix::new(Ipv6Addr::UNSPECIFIED, 0).expect("/0 is valid")),
                port: r.port,
                name: r.name,
                proto: r.proto.unwrap_or_default(),
                path: Path { segments: r.segments, return_path, tag: r.tag, flags: r.flags, hmac_key: r.hmac_key },
                origin,
            };
            rule.validate()?;
            Ok(rule)
        })
        .collect::<Result<_, PolicyError>>()?;
    Ok(Policy { rules, fail: file.fail.unwrap_or_default() })
}

/// Read a policy file.
pub fn read(path: &FsPath) -> Result<Policy, PolicyFileError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| PolicyFileError::Io { path: path.to_path_buf(), source })?;
    from_toml(&text, &path.display().to_string())
}

/// The policy file to read: `SRV6_POLICY` (which must exist), else `$XDG_CONFIG_HOME/srv6pipes/policy.toml`
/// (or `~/.config/…`), else [`SYSTEM_POLICY`], else none.
pub fn find(get: impl Fn(&str) -> Option<String>) -> Result<Option<PathBuf>, PolicyFileError> {
    if let Some(p) = get(ENV_POLICY).filter(|s| !s.is_empty()) {
        let path = PathBuf::from(p);
        return match path.metadata() {
            Ok(_) => Ok(Some(path)),
            Err(source) => Err(PolicyFileError::Io { path, source }),
        };
    }
    let user = get("XDG_CONFIG_HOME")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| get("HOME").filter(|s| !s.is_empty()).map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("srv6pipes/policy.toml"));
    Ok(user.into_iter().chain([PathBuf::from(SYSTEM_POLICY)]).find(|p| p.is_file()))
}

/// The whole policy srv6run hands the shim: the file's rules (if a file is found) with the environment's
/// (`--segs`, `--fail`, … as `SRV6_*` variables) on top.
pub fn load(get: impl Fn(&str) -> Option<String>) -> Result<Policy, PolicyFileError> {
    let base = match find(&get)? {
        Some(path) => read(&path)?,
        None => Policy::default(),
    };
    Ok(base.with_env(get)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    const FILE: &str = r#"
fail = "closed"
[[rule]]
dst = "fc00:4::/64"
port = 80
segments = ["fc00:e1::1", "fc00:e2::1"]
tag = 7

[[rule]]
name = "db.example."
proto = "any"
segments = ["fc00:e3::1"]
return-path = "none"

[[rule]]
dst = "fc00:5::1"
segments = ["fc00:e1::1"]
return-path = ["fc00:e9::1", "fc00:e8::1"]
"#;

    #[test]
    fn file_rules_match_in_order() {
        let p = from_toml(FILE, "test.toml").unwrap();
        assert_eq!(p.fail, FailMode::Closed);
        let (i, r) = p.lookup(Proto::Tcp, a("fc00:4::2"), 80, None).unwrap();
        assert_eq!((i, r.path.tag), (0, 7));
        assert!(p.lookup(Proto::Tcp, a("fc00:4::2"), 81, None).is_none());
        assert!(p.lookup(Proto::Udp, a("fc00:4::2"), 80, None).is_none());
        assert_eq!(p.lookup(Proto::Udp, a("2001:db8::1"), 53, Some("DB.example")).unwrap().0, 1);
        assert_eq!(p.lookup(Proto::Tcp, a("fc00:5::1"), 1, None).unwrap().0, 2);
    }

    #[test]
    fn srh_carries_return_path_in_srh_order() {
        let p = from_toml(FILE, "test.toml").unwrap();
        let srh = p.rules[0].path.srh(a("fc00:4::2")).unwrap();
        assert_eq!(srh.segments, vec![a("fc00:4::2"), a("fc00:e2::1"), a("fc00:e1::1")]);
        // The reply visits e2 then e1; in SRH order the last visited comes first.
        assert_eq!(srh.return_path(), Some(&[a("fc00:e1::1"), a("fc00:e2::1")][..]));
        assert_eq!(p.rules[1].path.srh(a("::1")).unwrap().return_path(), None);
        let explicit = p.rules[2].path.srh(a("fc00:5::1")).unwrap();
        assert_eq!(explicit.return_path(), Some(&[a("fc00:e8::1"), a("fc00:e9::1")][..]));
    }

    #[test]
    fn errors_say_where() {
        let e = from_toml("[[rule]]\nsegments = [\"fc00::1\"]\nport = \"x\"\n", "p.toml").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("p.toml") && msg.contains("line 3"), "{msg}");
        let e = from_toml("[[rule]]\nsegments = []\n", "p.toml").unwrap_err();
        assert!(e.to_string().contains("p.toml rule #1"), "{e}");
        let e = from_toml("[[rule]]\nsegs = [\"fc00::1\"]\n", "p.toml").unwrap_err();
        assert!(e.to_string().contains("unknown field `segs`"), "{e}");
    }

    #[test]
    fn missing_policy_file_says_the_os_error_once() {
        let e = find(|k| (k == ENV_POLICY).then(|| "/nonexistent/p.toml".to_string())).unwrap_err();
        let chain = format!("{e}: {}", std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default());
        assert_eq!(chain.matches("No such file or directory").count(), 1, "{chain}");
    }
}
