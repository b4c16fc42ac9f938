//! Every man page under man/ renders without warnings (`mandoc -Tlint -Wwarning`) and says what it is.

use std::path::PathBuf;
use std::process::Command;

fn pages() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../man");
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("readable man/ entry").path())
        .filter(|p| {
            p.extension().is_some_and(|e| e.len() == 1 && e.to_string_lossy().chars().all(|c| c.is_ascii_digit()))
        })
        .collect();
    pages.sort();
    pages
}

#[test]
fn every_program_has_a_page() {
    let names: Vec<String> =
        pages().iter().map(|p| p.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect();
    for want in [
        "srv6run.1",
        "srv6path.1",
        "srv6-path.5",
        "libsrv6sock.7",
        "srv6pipes-proxy.8",
        "srv6pipes-module.3",
        "srv6top.8",
    ] {
        assert!(names.iter().any(|n| n == want), "man/{want} is missing (have {names:?})");
    }
}

#[test]
fn pages_lint_clean_and_render() {
    for page in pages() {
        let lint = Command::new("mandoc")
            .args(["-Tlint", "-Wwarning"])
            .arg(&page)
            .output()
            .expect("mandoc is installed (scripts/install-deps)");
        let msg = String::from_utf8_lossy(&lint.stdout).into_owned() + &String::from_utf8_lossy(&lint.stderr);
        assert!(lint.status.success(), "{}: mandoc -Tlint: {msg}", page.display());
        let text = Command::new("mandoc").args(["-Tutf8"]).arg(&page).output().expect("mandoc");
        // Drop the overstrike (char, backspace) pairs mandoc uses for bold and underline.
        let mut plain = String::new();
        for c in String::from_utf8_lossy(&text.stdout).chars() {
            if c == '\u{8}' {
                plain.pop();
            } else {
                plain.push(c);
            }
        }
        let text = plain;
        assert!(
            text.contains("NAME") && text.contains("DESCRIPTION"),
            "{} renders without NAME/DESCRIPTION",
            page.display()
        );
    }
}
