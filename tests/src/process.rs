//! Running external programs, always bounded in time.
//!
//! [`Cmd`] runs a program (optionally inside a network namespace, through `ip netns exec`) to completion
//! within a timeout, or spawns it as a [`Proc`] that is killed when dropped. Each program gets its own
//! process group so that a kill also reaches the children it forked (nginx workers, a shell's pipeline).

use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Timeout of [`Cmd::run`] unless [`Cmd::timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a process gets to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);
/// Polling step of every bounded wait.
pub(crate) const POLL: Duration = Duration::from_millis(20);

/// A program to run, built up like [`std::process::Command`].
#[derive(Debug, Clone)]
pub struct Cmd {
    argv: Vec<OsString>,
    netns: Option<String>,
    envs: Vec<(OsString, OsString)>,
    timeout: Duration,
    log_dir: Option<PathBuf>,
}

/// What a finished program left.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output (lossily decoded).
    pub stdout: String,
    /// Standard error (lossily decoded).
    pub stderr: String,
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` {}", self.command, describe(self.status))?;
        for (name, text) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            if !text.trim().is_empty() {
                write!(f, "\n--- {name} ---\n{}", text.trim_end())?;
            }
        }
        Ok(())
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => format!("ended with {status}"),
    }
}

impl Cmd {
    /// `argv[0]` with its arguments, in the root network namespace.
    pub fn new<I, S>(argv: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Cmd {
            argv: argv.into_iter().map(Into::into).collect(),
            netns: None,
            envs: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            log_dir: None,
        }
    }

    /// Run inside network namespace `netns`.
    pub fn netns(mut self, netns: &str) -> Cmd {
        self.netns = Some(netns.to_owned());
        self
    }

    /// Where [`Cmd::spawn`] writes the program's standard output and error.
    pub fn log_dir(mut self, dir: &Path) -> Cmd {
        self.log_dir = Some(dir.to_owned());
        self
    }

    /// Add an argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Cmd {
        self.argv.push(arg.into());
        self
    }

    /// Add arguments.
    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.argv.extend(args.into_iter().map(Into::into));
        self
    }

    /// Set an environment variable for the program.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Cmd {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Bound [`Cmd::run`] / [`Cmd::output`] by `timeout` instead of [`DEFAULT_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Cmd {
        self.timeout = timeout;
        self
    }

    /// The command line as a string, for messages.
    pub fn display(&self) -> String {
        let mut s = self.netns.as_ref().map(|n| format!("[{n}] ")).unwrap_or_default();
        s.push_str(&self.argv.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "));
        s
    }

    fn command(&self) -> Result<Command> {
        let (program, args) = self.argv.split_first().context("empty command line")?;
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        };
        c.args(args).envs(self.envs.iter().map(|(k, v)| (k, v))).stdin(Stdio::null()).process_group(0);
        Ok(c)
    }

    /// Run to completion; an error if it cannot start, times out or exits unsuccessfully.
    pub fn run(self) -> Result<Output> {
        let out = self.output()?;
        if !out.status.success() {
            bail!("{out}");
        }
        Ok(out)
    }

    /// Run to completion; an error if it cannot start or times out (an unsuccessful exit is returned).
    pub fn output(self) -> Result<Output> {
        let command = self.display();
        let mut child = self
            .command()?
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start `{command}`"))?;
        // Readers on their own threads so that a chatty program cannot block on a full pipe.
        let stdout = reader(child.stdout.take());
        let stderr = reader(child.stderr.take());
        let status = wait_bounded(&mut child, self.timeout)?;
        // A grandchild that escaped the process group may hold the pipes open: bound the wait for EOF too.
        let collect = |rx: mpsc::Receiver<Vec<u8>>| {
            rx.recv_timeout(TERM_GRACE)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|_| "<output not closed>".into())
        };
        let (stdout, stderr) = (collect(stdout), collect(stderr));
        match status {
            Some(status) => Ok(Output { command, status, stdout, stderr }),
            None => bail!(
                "`{command}` timed out after {:?} and was killed\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
                self.timeout
            ),
        }
    }

    /// Start in the background; standard output and error go to files in the [`Cmd::log_dir`].
    pub fn spawn(self) -> Result<Proc> {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let command = self.display();
        let dir = self.log_dir.as_ref().with_context(|| format!("`{command}`: spawn needs a log directory"))?;
        let program = Path::new(self.argv.first().context("empty command line")?)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let base = dir.join(format!("{program}-{}", SEQ.fetch_add(1, Ordering::Relaxed)));
        let (stdout_path, stderr_path) = (base.with_extension("out"), base.with_extension("err"));
        let file = |p: &Path| std::fs::File::create(p).with_context(|| format!("creating {}", p.display()));
        let child = self
            .command()?
            .stdout(file(&stdout_path)?)
            .stderr(file(&stderr_path)?)
            .spawn()
            .with_context(|| format!("cannot start `{command}`"))?;
        Ok(Proc { child: Some(child), command, stdout_path, stderr_path })
    }
}

fn reader(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
    }
    rx
}

/// Poll `ready` until it holds; an error if it fails, or if `timeout` passes first (`ready` runs at least
/// once, so a zero timeout is a single probe). Every wait of the harness and the tests is bounded this way.
pub fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(POLL);
    }
}

/// Wait for `child` at most `timeout`; on timeout kill its process group and return `None`.
fn wait_bounded(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            kill_group(child, libc::SIGKILL);
            child.wait()?;
            return Ok(None);
        }
        std::thread::sleep(POLL);
    }
}

fn kill_group(child: &Child, signal: i32) {
    // The child leads its own process group (`process_group(0)`); we only signal that group.
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(-pid, signal) };
    }
}

/// A background program, stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Proc {
    child: Option<Child>,
    command: String,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl Proc {
    /// The command line, for messages.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// What the program wrote to standard error so far.
    pub fn stderr(&self) -> String {
        std::fs::read(&self.stderr_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// What the program wrote to standard output so far.
    pub fn stdout(&self) -> String {
        std::fs::read(&self.stdout_path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// The exit status if the program has ended.
    fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match &mut self.child {
            Some(c) => Ok(c.try_wait()?),
            None => bail!("`{}` was already stopped", self.command),
        }
    }

    /// Error (with its output) if the program has already ended; for "is my server still up?" checks.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.try_wait()? {
            bail!("`{}` {}\n--- stderr ---\n{}", self.command, describe(status), self.stderr().trim_end());
        }
        Ok(())
    }

    /// [`wait_until`] `ready`, failing at once if the program ends without having become ready; a timeout error
    /// carries the program's standard error.
    pub fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut(&Proc) -> Result<bool>,
    ) -> Result<()> {
        let waited = wait_until(what, timeout, || {
            if ready(self)? {
                return Ok(true);
            }
            if let Err(ended) = self.ensure_running() {
                // It may have said what we wait for just before exiting: give its output readers the moment
                // they need to reach the end.
                std::thread::sleep(Duration::from_millis(200));
                return if ready(self)? { Ok(true) } else { Err(ended) };
            }
            Ok(false)
        });
        waited.with_context(|| format!("`{}`\n--- stderr ---\n{}", self.command, self.stderr().trim_end()))
    }

    /// The program's process id (0 once stopped).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Send `signal` to the program itself (not its group), e.g. SIGTERM, SIGQUIT or SIGKILL.
    pub fn signal(&self, signal: i32) -> Result<()> {
        let child = self.child.as_ref().with_context(|| format!("`{}` was already stopped", self.command))?;
        let pid = i32::try_from(child.id())?;
        // SAFETY: kill(2) has no memory-safety preconditions.
        if unsafe { libc::kill(pid, signal) } != 0 {
            bail!("kill({pid}, {signal}): {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Wait for the program to end by itself (an error after `timeout`, the program then stopped) and
    /// return what it left.
    pub fn wait(mut self, timeout: Duration) -> Result<Output> {
        wait_until(&format!("`{}` to exit", self.command), timeout, || Ok(self.try_wait()?.is_some()))
            .with_context(|| format!("--- stderr ---\n{}", self.stderr().trim_end()))?;
        self.stop()
    }

    /// Stop the program (SIGTERM, SIGKILL after a grace period) and return what it left.
    pub fn stop(mut self) -> Result<Output> {
        let status = self.terminate()?;
        Ok(Output { command: self.command.clone(), status, stdout: self.stdout(), stderr: self.stderr() })
    }

    fn terminate(&mut self) -> Result<ExitStatus> {
        let mut child = self.child.take().with_context(|| format!("`{}` was already stopped", self.command))?;
        if let Some(status) = child.try_wait()? {
            // Its group may still hold forked children.
            kill_group(&child, libc::SIGKILL);
            return Ok(status);
        }
        kill_group(&child, libc::SIGTERM);
        match wait_bounded(&mut child, TERM_GRACE)? {
            Some(status) => {
                kill_group(&child, libc::SIGKILL);
                Ok(status)
            }
            // wait_bounded killed the group with SIGKILL and reaped the child.
            None => Ok(ExitStatus::from_raw(libc::SIGKILL)),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.terminate();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_reports_failure_with_stderr() {
        let err = Cmd::new(["sh", "-c", "echo oops >&2; exit 3"]).run().unwrap_err().to_string();
        assert!(err.contains("exited with status 3") && err.contains("oops"), "{err}");
    }

    #[test]
    fn output_returns_unsuccessful_exit() {
        let out = Cmd::new(["sh", "-c", "echo hi; exit 1"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(out.stdout, "hi\n");
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        let err = Cmd::new(["sh", "-c", "sleep 30 & sleep 30"]).timeout(Duration::from_millis(200)).run().unwrap_err();
        assert!(err.to_string().contains("timed out"), "{err}");
    }

    #[test]
    fn spawned_process_stops_and_keeps_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let p = Cmd::new(["sh", "-c", "echo started; exec sleep 30"]).log_dir(dir.path()).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while p.stdout().is_empty() && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        let out = p.stop().unwrap();
        assert_eq!(out.stdout, "started\n");
        assert_eq!(out.status.signal(), Some(libc::SIGTERM));
    }
}
