//! The workspace's layering rules, checked on the sources: no program depends on another program's crate,
//! and no module of a crate imports, directly or around a loop, a module that imports it back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<Package>,
    workspace_members: Vec<String>,
}

#[derive(Deserialize)]
struct Package {
    id: String,
    name: String,
    manifest_path: PathBuf,
    dependencies: Vec<Dependency>,
    targets: Vec<Target>,
}

#[derive(Deserialize)]
struct Dependency {
    name: String,
    kind: Option<String>,
}

#[derive(Deserialize)]
struct Target {
    kind: Vec<String>,
}

fn workspace() -> Vec<Package> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--manifest-path"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: Metadata = serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON");
    meta.packages.into_iter().filter(|p| meta.workspace_members.contains(&p.id)).collect()
}

#[test]
fn no_crate_depends_on_a_program() {
    let packages = workspace();
    // A program's crate: binaries and no library to share.
    let programs: BTreeSet<&str> = packages
        .iter()
        .filter(|p| p.targets.iter().any(|t| t.kind.iter().any(|k| k == "bin")))
        .filter(|p| !p.targets.iter().any(|t| t.kind.iter().any(|k| k == "lib" || k == "cdylib")))
        .map(|p| p.name.as_str())
        .collect();
    assert!(programs.contains("srv6run") && programs.contains("srv6top"), "programs found: {programs:?}");
    for p in &packages {
        for d in p.dependencies.iter().filter(|d| d.kind.as_deref() != Some("dev")) {
            assert!(!programs.contains(d.name.as_str()), "{} depends on the program crate {}", p.name, d.name);
        }
    }
}

/// Top-level module name of a source file under `src/` (`src/wire/srh.rs` is in module `wire`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_string_lossy().into_owned();
    let name = first.trim_end_matches(".rs").to_string();
    (!matches!(name.as_str(), "main" | "lib" | "bin")).then_some(name)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Which top-level modules each top-level module of the crate at `src` names as `crate::X`,
/// test code included.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(src, f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(from) = module_of(src, file) else { continue };
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for m in &modules {
            let named = ["crate::", "crate::{"].iter().any(|p| {
                text.match_indices(p).any(|(i, _)| {
                    let rest = &text[i + p.len()..];
                    rest.starts_with(m.as_str())
                        && !rest[m.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
                })
            });
            if named && *m != from {
                graph.entry(from.clone()).or_default().insert(m.clone());
            }
        }
    }
    graph
}

/// A cycle in `graph`, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|n| n == node) {
            let mut cycle = path[i..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    for p in workspace() {
        let src = p.manifest_path.parent().expect("a manifest has a directory").join("src");
        let graph = module_graph(&src);
        if let Some(cycle) = find_cycle(&graph) {
            panic!("crate {}: modules import each other: {}", p.name, cycle.join(" -> "));
        }
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let g = |edges: &[(&str, &str)]| {
        let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            m.entry(a.to_string()).or_default().insert(b.to_string());
        }
        m
    };
    assert_eq!(find_cycle(&g(&[("a", "b"), ("b", "c")])), None);
    assert_eq!(find_cycle(&g(&[("a", "b"), ("b", "c"), ("c", "a")])).map(|c| c.len()), Some(4));
}
