//! A child process measured from outside (issue 30): its wall time, and from the kernel's
//! `wait4(2)` accounting its peak resident set and CPU time. What another engine costs, taken
//! around its process rather than copied from candle's run.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What the kernel and the clock say about one finished child.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProcessUse {
    /// Spawn to exit.
    pub wall_s: f64,
    /// Peak resident set (ru_maxrss).
    pub max_rss_bytes: u64,
    pub user_s: f64,
    pub sys_s: f64,
}

/// Runs `cmd` to completion and returns its stdout and what it used. A failure to start, a
/// non-zero exit or a signal is one error naming `program`, `what` it was given, the status
/// and the last line of its stderr.
pub fn run_measured(cmd: &mut Command, program: &Path, what: &str) -> Result<(String, ProcessUse)> {
    let t0 = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Error::io(program))?;
    let err_reader = read_in_background(child.stderr.take().expect("stderr is piped"));
    let mut out = String::new();
    let _ = child
        .stdout
        .take()
        .expect("stdout is piped")
        .read_to_string(&mut out);
    let stderr_text = move || err_reader.join().unwrap_or_default();
    let process = wait_measured(&mut child, t0, stderr_text, program, what)?;
    Ok((out, process))
}

/// Reads `pipe` to its end on a thread of its own (a child's stderr, so that a chatty child
/// never blocks on a full pipe); join the handle for the text.
pub fn read_in_background<R: Read + Send + 'static>(
    mut pipe: R,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    })
}

/// `wait4(2)` on our own unreaped child `pid`, retried on EINTR: its return code (`pid` on
/// success), the wait status and the kernel's resource accounting of the child.
pub fn wait4(pid: libc::pid_t) -> (libc::pid_t, libc::c_int, libc::rusage) {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data that wait4 fills; `pid` is the caller's unreaped child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = loop {
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if rc == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break rc;
    };
    (rc, status, ru)
}

/// Waits for `child` (spawned at `t0`, its stdout already read or closed) and returns what it
/// used, from wait4. A non-zero exit or a signal is one error naming `program`, `what` it was
/// given, the status and the last line of its stderr (`stderr`, read once the child is gone).
pub fn wait_measured(
    child: &mut Child,
    t0: Instant,
    stderr: impl FnOnce() -> String,
    program: &Path,
    what: &str,
) -> Result<ProcessUse> {
    let pid = child.id() as libc::pid_t;
    let (rc, status, ru) = wait4(pid);
    let wall_s = t0.elapsed().as_secs_f64();
    let stderr = stderr();
    if rc != pid {
        return Err(Error::Measure(format!(
            "{} {what}: waiting for it failed: {}",
            program.display(),
            std::io::Error::last_os_error()
        )));
    }
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    if !ok {
        let how = if libc::WIFEXITED(status) {
            format!("exit status {}", libc::WEXITSTATUS(status))
        } else {
            format!("killed by signal {}", libc::WTERMSIG(status))
        };
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(Error::Measure(format!(
            "{} {what} failed ({how}): {last}",
            program.display()
        )));
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    Ok(ProcessUse {
        wall_s,
        // Linux reports ru_maxrss in KiB.
        max_rss_bytes: ru.ru_maxrss.max(0) as u64 * 1024,
        user_s: tv(ru.ru_utime),
        sys_s: tv(ru.ru_stime),
    })
}

/// Field `n` (1-based, as proc(5) numbers them; n >= 3) of /proc/PID/stat. The command name
/// (field 2) is in parentheses and may hold spaces and parentheses: fields are read after the
/// last `)`.
pub fn stat_field(pid: u32, n: usize) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.get(s.rfind(')')? + 1..)?;
    rest.split_whitespace().nth(n.checked_sub(3)?)?.parse().ok()
}

/// A process's start time in clock ticks since boot (field 22 of /proc/PID/stat): with the
/// pid, an identity that never repeats while the machine is up.
pub fn start_ticks(pid: u32) -> Option<u64> {
    stat_field(pid, 22)
}

/// Whether the process `pid` that started at `start` (from [`start_ticks`]) is still running:
/// not when the pid is gone, names another process since, or is a zombie (killed, not yet
/// reaped: state `Z`/`X`, field 3 of /proc/PID/stat).
pub fn alive(pid: u32, start: u64) -> bool {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = s
        .rfind(')')
        .and_then(|i| s[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z") | Some("X") | None) && start_ticks(pid) == Some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_measured_and_a_failure_is_one_line() {
        let sh = Path::new("/bin/sh");
        if !sh.is_file() {
            println!("skip: no /bin/sh");
            return;
        }
        let (out, u) =
            run_measured(Command::new(sh).args(["-c", "echo hello"]), sh, "-c echo").unwrap();
        assert_eq!(out.trim(), "hello");
        assert!(u.wall_s > 0.0 && u.max_rss_bytes > 0, "{u:?}");
        let e = run_measured(
            Command::new(sh).args(["-c", "echo first >&2; echo last words >&2; exit 3"]),
            sh,
            "-c fail",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("exit status 3") && e.ends_with("last words") && !e.contains('\n'),
            "{e}"
        );
    }

    /// A running child is alive; killed and not yet reaped (a zombie) it is not, though its
    /// /proc entry and start time are still there; another start time is another process.
    #[test]
    fn a_killed_unreaped_child_is_not_alive() {
        let mut c = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = c.id();
        let start = start_ticks(pid).unwrap();
        assert!(alive(pid, start));
        assert!(!alive(pid, start + 1));
        c.kill().unwrap();
        // The zombie keeps its /proc entry until waited for.
        let t0 = Instant::now();
        while alive(pid, start) {
            assert!(t0.elapsed().as_secs() < 10, "still alive after SIGKILL");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(start_ticks(pid), Some(start), "a zombie until reaped");
        c.wait().unwrap();
        assert!(!alive(pid, start));
    }
}
