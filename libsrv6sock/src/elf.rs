//! Just enough of ELF to decide what a preload can reach: whether an executable has a program interpreter
//! (`srv6run` and the shim's `exec` hooks refuse or report static programs) and the shim's marker section
//! (`srv6run --preload` accepts only the shim). Works on the first bytes of a file; allocates nothing; never
//! panics: `None` means "not an ELF file this code can read".

/// Name of the section that marks `libsrv6sock.so`; it holds [`SHIM_MARKER_PREFIX`] and the version.
pub const SHIM_SECTION: &str = ".srv6pipes_shim";
/// What the marker section's content starts with, before the shim's version.
pub const SHIM_MARKER_PREFIX: &str = "libsrv6sock.so ";

/// A little- or big-endian ELF32 or ELF64 image.
struct Elf<'a> {
    bytes: &'a [u8],
    wide: bool,
    little: bool,
}

impl<'a> Elf<'a> {
    fn new(bytes: &'a [u8]) -> Option<Self> {
        if bytes.get(..4)? != b"\x7fELF" {
            return None;
        }
        let wide = match bytes.get(4)? {
            1 => false,
            2 => true,
            _ => return None,
        };
        Some(Elf { bytes, wide, little: *bytes.get(5)? == 1 })
    }

    fn int(&self, at: usize, n: usize) -> Option<u64> {
        let b = self.bytes.get(at..at.checked_add(n)?)?;
        Some(b.iter().enumerate().fold(0u64, |v, (i, &x)| {
            let shift = if self.little { 8 * i } else { 8 * (n - 1 - i) };
            v | (x as u64) << shift
        }))
    }

    /// A word: 8 bytes in ELF64, 4 in ELF32.
    fn word(&self, at: usize) -> Option<u64> {
        self.int(at, if self.wide { 8 } else { 4 })
    }

    fn offset(base: u64, index: u64, size: u64) -> Option<usize> {
        usize::try_from(base.checked_add(index.checked_mul(size)?)?).ok()
    }
}

/// Whether an ELF executable asks for a program interpreter (PT_INTERP): `None` if `elf` is not a complete
/// ELF header and program header table. Static PIEs have a dynamic section but no interpreter: `Some(false)`.
pub fn has_interpreter(elf: &[u8]) -> Option<bool> {
    const PT_INTERP: u64 = 3;
    let e = Elf::new(elf)?;
    let (phoff, phentsize, phnum) = if e.wide {
        (e.int(0x20, 8)?, e.int(0x36, 2)?, e.int(0x38, 2)?)
    } else {
        (e.int(0x1c, 4)?, e.int(0x2a, 2)?, e.int(0x2c, 2)?)
    };
    let mut found = false;
    for i in 0..phnum {
        found |= e.int(Elf::offset(phoff, i, phentsize)?, 4)? == PT_INTERP;
    }
    Some(found)
}

/// The content of the section called `name` in a whole ELF file, if there is one.
pub fn section<'a>(elf: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let e = Elf::new(elf)?;
    let (shoff, shentsize, shnum, shstrndx) = if e.wide {
        (e.int(0x28, 8)?, e.int(0x3a, 2)?, e.int(0x3c, 2)?, e.int(0x3e, 2)?)
    } else {
        (e.int(0x20, 4)?, e.int(0x2e, 2)?, e.int(0x30, 2)?, e.int(0x32, 2)?)
    };
    // Offset and size of a section header's content: sh_offset and sh_size follow sh_name, sh_type, sh_flags
    // and sh_addr.
    let (off_at, size_at) = if e.wide { (0x18, 0x20) } else { (0x10, 0x14) };
    let content = |index: u64| -> Option<&'a [u8]> {
        let header = Elf::offset(shoff, index, shentsize)?;
        let start = usize::try_from(e.word(header + off_at)?).ok()?;
        let len = usize::try_from(e.word(header + size_at)?).ok()?;
        elf.get(start..start.checked_add(len)?)
    };
    let names = content(shstrndx)?;
    (0..shnum).find_map(|i| {
        let at = usize::try_from(e.int(Elf::offset(shoff, i, shentsize)?, 4)?).ok()?;
        let rest = names.get(at..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        (&rest[..end] == name.as_bytes()).then(|| content(i)).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_system_binary_has_an_interpreter_and_sections() {
        let sh = std::fs::read("/bin/sh").unwrap();
        assert_eq!(has_interpreter(&sh), Some(true));
        assert!(section(&sh, ".text").is_some_and(|t| !t.is_empty()));
        assert_eq!(section(&sh, SHIM_SECTION), None);
    }

    #[test]
    fn garbage_is_not_elf_and_never_panics() {
        assert_eq!(has_interpreter(b"hello"), None);
        let mut fake = b"\x7fELF\x02\x01".to_vec();
        fake.resize(64, 0xff);
        assert_eq!(has_interpreter(&fake), None);
        assert_eq!(section(&fake, ".text"), None);
        let sh = std::fs::read("/bin/sh").unwrap();
        for n in (0..sh.len()).step_by(997) {
            let _ = (has_interpreter(&sh[..n]), section(&sh[..n], ".text"));
        }
    }
}
