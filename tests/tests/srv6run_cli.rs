//! What srv6run refuses before it runs anything, each case with its exit status and message: unknown
//! options (not taken for the program), a `--preload` that is not the shim, SIDs no packet can be routed to,
//! paths too long for the SRH; and what the shim says when it is preloaded by hand with a TOML policy it
//! cannot read (it has no TOML parser: srv6run compiles the policy); and `--explain`'s checks of what the real
//! run would meet, in topology `steering`.

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

/// `srv6run --explain --json ARGS` in the client of topology `steering`: its checks as (check, status, detail).
fn explain_checks(net: &srv6pipes_tests::Net, args: &[&str]) -> Result<Vec<(String, String, String)>> {
    let mut argv = vec![binaries::path("srv6run")?.display().to_string(), "--explain".into(), "--json".into()];
    argv.extend(args.iter().map(|s| s.to_string()));
    let out = net.run("client", argv)?;
    let e: serde_json::Value = serde_json::from_str(&out.stdout).with_context(|| out.stdout.clone())?;
    let checks = e["checks"].as_array().with_context(|| format!("--explain lists its checks: {e}"))?;
    Ok(checks
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (s("check"), s("status"), s("detail"))
        })
        .collect())
}

fn status_of<'a>(checks: &'a [(String, String, String)], check: &str) -> Option<&'a (String, String, String)> {
    checks.iter().find(|c| c.0 == check)
}

/// `--explain` checks what the real run meets: a static program (refused), a first waypoint with no route
/// (the connection fails), the MTU left after a long SRH; and says ok where the run works.
#[test]
fn explain_says_which_checks_the_real_run_would_fail() {
    srv6pipes_tests::with_net("steering", "explain", |net| {
        let url = "http://[fc00:5::1]:8080/";
        let good = explain_checks(net, &["--segs", "fc00:f1::1,fc00:f2::1", "--", "curl", url])?;
        for check in ["program", "route", "mtu", "seg6_enabled"] {
            let c = status_of(&good, check).with_context(|| format!("{check} checked: {good:?}"))?;
            ensure!(c.1 == "ok", "{check} passes on a working path: {c:?}");
        }

        let unrouted = explain_checks(net, &["--segs", "fc00:77::1", "--", "curl", url])?;
        let route = status_of(&unrouted, "route").context("route checked")?;
        ensure!(route.1 == "fail" && route.2.contains("no route to the first waypoint fc00:77::1"), "{route:?}");
        let real = net
            .cmd("client", [binaries::path("srv6run")?.display().to_string().as_str(), "--segs", "fc00:77::1", "--"])
            .args(["curl", "-sS", "--max-time", "10", url])
            .output()?;
        ensure!(!real.status.success() && real.stderr.contains("Couldn't connect"), "the real run fails too: {real}");

        let dir = tempfile::tempdir()?;
        let static_bin = dir.path().join("static");
        let src = dir.path().join("s.c");
        std::fs::write(&src, "int main(void) { return 0; }\n")?;
        let built = Command::new("gcc").arg("-static").arg("-o").arg(&static_bin).arg(&src).status()?;
        ensure!(built.success(), "gcc -static");
        let bin = static_bin.to_str().context("path")?;
        let checks = explain_checks(net, &["--segs", "fc00:f1::1", "--", bin, url])?;
        let program = status_of(&checks, "program").context("program checked")?;
        ensure!(program.1 == "fail" && program.2.contains("statically linked"), "{program:?}");

        let long = (1..=70).map(|i| format!("fc00:f1::{i:x}")).collect::<Vec<_>>().join(",");
        let checks = explain_checks(net, &["--segs", &long, "--return-path", "none", "--", "curl", url])?;
        let mtu = status_of(&checks, "mtu").context("mtu checked")?;
        ensure!(mtu.1 == "warning" && mtu.2.contains("1144-byte SRH"), "70 waypoints leave little MTU: {mtu:?}");
        Ok(())
    });
}
