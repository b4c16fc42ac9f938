//! Compiles every `bpf/*.bpf.c` with clang (`-target bpf`) into `OUT_DIR`, where the loader includes it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    // Debian keeps asm/ under the multiarch directory; clang -target bpf does not look there by itself.
    let multiarch = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        other => panic!("no multiarch include directory known for {other}"),
    };
    println!("cargo:rerun-if-changed=bpf");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let mut sources: Vec<PathBuf> = std::fs::read_dir("bpf")
        .expect("bpf/ holds the eBPF sources")
        .map(|e| e.expect("a readable bpf/ entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
        .collect();
    sources.sort();
    for src in sources {
        let name = src.file_name().and_then(|n| n.to_str()).expect("a UTF-8 file name").replace(".bpf.c", ".bpf.o");
        compile(&clang, &src, &out.join(name), multiarch);
    }
}

fn compile(clang: &str, src: &Path, obj: &Path, multiarch: &str) {
    let status = Command::new(clang)
        .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf", "-mcpu=v3", "-fno-crash-diagnostics"])
        .arg(format!("-I/usr/include/{multiarch}"))
        .arg("-c")
        .arg(src)
        .arg("-o")
        .arg(obj)
        .status()
        .unwrap_or_else(|e| panic!("running {clang} (install clang and libbpf-dev): {e}"));
    assert!(status.success(), "{clang} failed on {}", src.display());
}
