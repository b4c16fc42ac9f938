//! What srv6run refuses before it runs anything, each case with its exit status and message: unknown
//! options (not taken for the program), a `--preload` that is not the shim, SIDs no packet can be routed to,
//! paths too long for the SRH; and what the shim says when it is preloaded by hand with a TOML policy it
//! cannot read (it has no TOML parser: srv6run compiles the policy). No network: nothing here is steered.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{ensure, Context, Result};
use srv6pipes_tests::binaries;

/// `srv6run ARGS… -- sh -c 'touch MARKER'`, and whether the program ran.
fn refused(args: &[&str]) -> Result<(Output, String)> {
    let dir = tempfile::tempdir()?;
    let marker = dir.path().join("ran");
    let touch = format!("touch {}", marker.display());
    let mut argv: Vec<&str> = args.to_vec();
    if !args.contains(&"--") {
        argv.push("--");
    }
    argv.extend(["sh", "-c", &touch]);
    let out = Command::new(binaries::path("srv6run")?).args(&argv).output()?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(!marker.exists(), "{args:?}: the program must not run; stderr: {stderr}");
    Ok((out, stderr))
}

/// Checks exit status 2 and a one-line message holding every piece of `says`.
fn expect_usage_error(args: &[&str], says: &[&str]) -> Result<()> {
    let (out, stderr) = refused(args)?;
    ensure!(out.status.code() == Some(2), "{args:?}: exit status 2, got {:?}: {stderr}", out.status.code());
    let lines: Vec<&str> = stderr.lines().collect();
    ensure!(lines.len() == 1 && lines[0].starts_with("srv6run: "), "{args:?}: one line of error: {lines:?}");
    for s in says {
        ensure!(lines[0].contains(s), "{args:?}: the error says {s:?}: {}", lines[0]);
    }
    Ok(())
}

#[test]
fn an_unknown_option_is_an_error_with_a_suggestion_not_the_program() -> Result<()> {
    expect_usage_error(&["--seg", "fc00::1", "--"], &["unknown option --seg", "did you mean --segs?"])?;
    expect_usage_error(&["--segs", "fc00::1", "--fial", "closed", "--"], &["unknown option --fial", "--fail"])?;
    // After PROGRAM, options are PROGRAM's.
    let out =
        Command::new(binaries::path("srv6run")?).args(["--segs", "fc00::1", "sh", "-c", "echo $0", "-x"]).output()?;
    ensure!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "-x",
        "PROGRAM's own options are passed on: {out:?}"
    );
    Ok(())
}

/// A shared library that is not the shim: the zlib that curl links.
fn libz() -> Result<PathBuf> {
    let multiarch = Command::new("gcc").arg("-print-multiarch").output()?;
    let multiarch = String::from_utf8_lossy(&multiarch.stdout).trim().to_string();
    [format!("/usr/lib/{multiarch}"), format!("/lib/{multiarch}"), "/usr/lib64".into(), "/usr/lib".into()]
        .iter()
        .map(|d| Path::new(d).join("libz.so.1"))
        .find(|p| p.is_file())
        .context("libz.so.1 (installed with curl) not found")
}

#[test]
fn preload_must_be_the_shim() -> Result<()> {
    let libz = libz()?;
    let libz = libz.to_str().context("path")?;
    for fail in ["open", "closed"] {
        expect_usage_error(
            &["--preload", libz, "--fail", fail, "--segs", "fc00::1", "--"],
            &["not libsrv6sock.so", "unsteered"],
        )?;
    }
    let shim = binaries::path("libsrv6sock.so")?;
    let out = Command::new(binaries::path("srv6run")?)
        .arg("--preload")
        .arg(&shim)
        .args(["--segs", "fc00::1", "--", "true"])
        .output()?;
    ensure!(out.status.success(), "the shim itself is accepted: {out:?}");
    Ok(())
}

#[test]
fn sids_must_be_unicast_addresses_a_packet_can_be_routed_to() -> Result<()> {
    expect_usage_error(&["--segs", "ff02::1,::1"], &["waypoint 1 (ff02::1) is a multicast address", "unicast"])?;
    expect_usage_error(&["--segs", "fc00::1,::1"], &["waypoint 2 (::1) is a loopback address"])?;
    expect_usage_error(&["--segs", "fe80::1"], &["link-local"])?;
    expect_usage_error(
        &["--segs", "fc00::1", "--return-path", "fc00::2,ff05::2"],
        &["return waypoint 2", "multicast"],
    )?;
    Ok(())
}

#[test]
fn path_size_limits_say_the_limit_and_the_fix() -> Result<()> {
    let segs = |n: usize| (1..=n).map(|i| format!("fc00:{i:x}::1")).collect::<Vec<_>>().join(",");
    expect_usage_error(
        &["--segs", &segs(16)],
        &["16 waypoints with a return path", "at most 15 waypoints with a return path", "--return-path none"],
    )?;
    let fifteen = Command::new(binaries::path("srv6run")?).args(["--segs", &segs(15), "--", "true"]).output()?;
    ensure!(fifteen.status.success(), "15 waypoints with a return path fit: {fifteen:?}");
    let without = Command::new(binaries::path("srv6run")?)
        .args(["--segs", &segs(16), "--return-path", "none", "--", "true"])
        .output()?;
    ensure!(without.status.success(), "16 waypoints without a return path fit: {without:?}");
    expect_usage_error(&["--segs", &segs(128), "--return-path", "none"], &["128 waypoints", "at most 127"])?;
    Ok(())
}

/// The shim preloaded by hand (no srv6run) with `SRV6_POLICY` naming a TOML file: it cannot read it (no TOML
/// parser in the host program), says so once on standard error with what to do, and steers nothing; under
/// `SRV6_FAIL=closed` IPv6 connections fail.
#[test]
fn hand_preloaded_shim_refuses_a_toml_policy_and_says_to_use_srv6run() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "[[rule]]\nsegments = [\"fc00:e1::1\"]\n")?;
    let connect =
        "import socket\ntry:\n    socket.create_connection(('::1', 9), timeout=5)\nexcept OSError as e:\n    \
                   print(e.errno)\n";
    for (fail, errno) in [("open", libc::ECONNREFUSED), ("closed", libc::EINVAL)] {
        let out = Command::new("/usr/bin/python3")
            .args(["-c", connect])
            .env("LD_PRELOAD", binaries::path("libsrv6sock.so")?)
            .env("SRV6_POLICY", &policy)
            .env("SRV6_FAIL", fail)
            .env("SRV6_AGENT", "")
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            stderr.lines().count() == 1
                && stderr.contains("does not read policy files")
                && stderr.contains(&format!("srv6run --policy {}", policy.display())),
            "SRV6_FAIL={fail}: one line saying what to do: {stderr}"
        );
        let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
        ensure!(got == errno.to_string(), "SRV6_FAIL={fail}: connect fails with errno {errno}, got {got:?}: {stderr}");
    }
    Ok(())
}
