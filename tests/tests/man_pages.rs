//! Every man page under man/ renders without warnings (`mandoc -Tlint -Wwarning`) and says what it is, and
//! every program's page documents exactly the options its `--help` (clap, the same definitions) lists.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use srv6pipes_tests::binaries;

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
        "srv6reply.8",
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

/// The options (`long`, optional `short`) a `--help` text lists, and its subcommands.
fn help_options(help: &str) -> (BTreeSet<(String, Option<char>)>, Vec<String>) {
    let mut options = BTreeSet::new();
    let mut commands = Vec::new();
    let mut in_commands = false;
    for line in help.lines() {
        if !line.starts_with(' ') {
            in_commands = line.trim_end() == "Commands:";
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if in_commands {
            if let Some(cmd) = words.first().filter(|c| **c != "help") {
                commands.push(cmd.to_string());
            }
            continue;
        }
        let (short, long) = match words.as_slice() {
            [s, l, ..] if s.len() == 3 && s.starts_with('-') && s.ends_with(',') && l.starts_with("--") => {
                (s.chars().nth(1), *l)
            }
            [l, ..] if l.starts_with("--") => (None, *l),
            _ => continue,
        };
        let long = long.trim_start_matches("--").split(['=', '.', ',']).next().unwrap_or_default();
        options.insert((long.to_string(), short));
    }
    (options, commands)
}

fn help(bin: &str, sub: Option<&str>) -> String {
    let path = binaries::path(bin).expect("the workspace is built (cargo build --workspace)");
    let out = Command::new(&path).args(sub).arg("--help").output().expect("runs");
    assert!(out.status.success(), "{bin} {sub:?} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn program_pages_document_exactly_the_programs_options() {
    for (bin, page) in [
        ("srv6run", "srv6run.1"),
        ("srv6top", "srv6top.8"),
        ("srv6pipes-proxy", "srv6pipes-proxy.8"),
        ("srv6reply", "srv6reply.8"),
    ] {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../man").join(page);
        // mdoc escapes hyphens in some pages (`Fl \-port`): compare unescaped.
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).replace("\\-", "-");
        let (mut options, commands) = help_options(&help(bin, None));
        for c in &commands {
            options.extend(help_options(&help(bin, Some(c))).0);
        }
        assert!(options.iter().any(|(l, _)| l == "help"), "{bin}: no options parsed from --help");
        // --help and --version are clap's own: a page may leave them out.
        for (long, short) in options.iter().filter(|(l, _)| l != "help" && l != "version") {
            assert!(text.contains(&format!("Fl -{long}")), "man/{page} does not document --{long}");
            if let Some(s) = short {
                assert!(text.contains(&format!("Fl {s} , Fl -{long}")), "man/{page} lacks -{s} for --{long}");
            }
        }
        for line in text.lines().filter(|l| l.starts_with(".It Fl")) {
            for long in line.split("Fl -").skip(1).filter_map(|s| s.split_whitespace().next()) {
                assert!(
                    options.iter().any(|(l, _)| l == long),
                    "man/{page} documents --{long}, which `{bin} --help` does not list"
                );
            }
        }
    }
}
