//! What a run measures: the settings after `--quick` defaults and the object sizes.

use std::str::FromStr;
use std::time::Duration;

/// Settings after --quick defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    pub duration: u64,
    pub reps: usize,
    pub warmup: u64,
    pub pause: Duration,
    pub threads: u32,
    pub connections: u32,
    pub workers: usize,
    pub xor_passes: u8,
    pub rate: String,
    pub quick: bool,
}

/// An object size: `1k` = 1024 bytes, `10m` = 10 MiB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Size {
    pub label: String,
    pub bytes: u64,
}

impl FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Size, String> {
        let s = s.trim().to_ascii_lowercase();
        let (num, mult) = match s.chars().last() {
            Some('k') => (&s[..s.len() - 1], 1024),
            Some('m') => (&s[..s.len() - 1], 1024 * 1024),
            _ => (s.as_str(), 1),
        };
        let n: u64 = num.parse().map_err(|_| format!("bad size {s:?} (e.g. 1k, 100k, 10m)"))?;
        if n == 0 || n * mult > 1 << 30 {
            return Err(format!("size {s:?} out of range (1 byte to 1 GiB)"));
        }
        Ok(Size { label: s.clone(), bytes: n * mult })
    }
}
