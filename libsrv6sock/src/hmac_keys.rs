//! HMAC key files: the secrets shared by clients (`srv6run --hmac-key KEYID:FILE`) and proxies
//! (`srv6pipes-proxy --require-hmac FILE`), one key a line:
//!
//! ```text
//! # KEYID SECRET          (blank lines and lines starting with # are ignored)
//! 7 correct-horse-battery-staple
//! ```
//!
//! KEYID is a 32-bit number (the SRH HMAC TLV's key id); SECRET is the rest of the line, 1 to 64 bytes
//! without blanks, the text `ip sr hmac set KEYID sha256` takes. The algorithm is HMAC-SHA256.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Longest secret Linux keeps (`SEG6_HMAC_SECRET_LEN`).
pub const MAX_SECRET_LEN: usize = 64;

/// Why a key file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file cannot be read.
    #[error("cannot read HMAC key file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line that is not `KEYID SECRET`.
    #[error("{origin} line {line}: {reason}")]
    Line {
        /// The file.
        origin: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The file holds no key.
    #[error("{0}: no key (lines of KEYID SECRET)")]
    Empty(String),
}

/// The keys of a key file, by key id.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HmacKeys {
    keys: BTreeMap<u32, Vec<u8>>,
}

impl std::fmt::Debug for HmacKeys {
    // Secrets stay out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmacKeys").field("key_ids", &self.keys.keys().collect::<Vec<_>>()).finish()
    }
}

impl HmacKeys {
    /// Parse key-file text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<HmacKeys, KeyFileError> {
        let mut keys = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let bad = |reason: String| KeyFileError::Line { origin: origin.to_string(), line: i + 1, reason };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(id), Some(secret), None) = (words.next(), words.next(), words.next()) else {
                return Err(bad("expected KEYID SECRET (a secret has no blanks)".into()));
            };
            let id: u32 = id.parse().map_err(|_| bad(format!("key id {id:?} is not a number 0 to 4294967295")))?;
            if secret.len() > MAX_SECRET_LEN {
                return Err(bad(format!("secret of key {id} longer than {MAX_SECRET_LEN} bytes")));
            }
            if keys.insert(id, secret.as_bytes().to_vec()).is_some() {
                return Err(bad(format!("key id {id} given twice")));
            }
        }
        if keys.is_empty() {
            return Err(KeyFileError::Empty(origin.to_string()));
        }
        Ok(HmacKeys { keys })
    }

    /// Read a key file.
    pub fn from_file(path: &Path) -> Result<HmacKeys, KeyFileError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| KeyFileError::Read { path: path.to_path_buf(), source })?;
        HmacKeys::parse(&text, &path.display().to_string())
    }

    /// The secret of `key_id`.
    pub fn get(&self, key_id: u32) -> Option<&[u8]> {
        self.keys.get(&key_id).map(Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids_and_secrets_and_says_where_it_is_wrong() {
        let k = HmacKeys::parse("# keys\n\n7 s3cret\n 8   other \n", "k").unwrap();
        assert_eq!((k.get(7), k.get(8), k.get(9)), (Some(&b"s3cret"[..]), Some(&b"other"[..]), None));
        assert!(!format!("{k:?}").contains("s3cret"));
        let e = HmacKeys::parse("7 a\nx b\n", "k").unwrap_err();
        assert!(e.to_string().starts_with("k line 2: key id \"x\""), "{e}");
        assert!(HmacKeys::parse("7 a b\n", "k").is_err());
        assert!(HmacKeys::parse("7\n", "k").is_err());
        assert!(HmacKeys::parse("7 a\n7 b\n", "k").is_err());
        assert!(HmacKeys::parse(&format!("7 {}\n", "x".repeat(65)), "k").is_err());
        assert!(matches!(HmacKeys::parse("# none\n", "k"), Err(KeyFileError::Empty(_))));
    }
}
