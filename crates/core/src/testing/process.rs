//! Processes and scratch directories of the private services: signals by
//! PID through `kill(1)` (the workspace forbids `unsafe`, so no libc),
//! process facts from `/proc`, and the per-service directories with their
//! stale-directory sweep.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::Error;

/// Whether this process runs as root (PostgreSQL refuses to: its commands
/// then run as the `postgres` user).
pub(crate) fn is_root() -> bool {
    // "Uid:\treal\teffective\tsaved\tfs"
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Sends `signal` (`STOP`, `CONT`, `TERM`, `KILL`, …) to `pid`.
pub(crate) fn signal(pid: u32, signal: &str) -> Result<(), Error> {
    let what = format!("kill -s {signal} {pid}");
    let output = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .output()
        .map_err(|e| Error::io(what.clone(), e))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Command {
            what,
            detail: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// The fields of `/proc/<pid>/stat` after the command name (which may hold
/// spaces): state, ppid, ….
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    Some(after_name.split_whitespace().map(str::to_string).collect())
}

/// Whether `pid` runs (a zombie does not).
pub(crate) fn is_alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|fields| fields.first().is_some_and(|state| state != "Z"))
}

/// Whether `pid` is stopped by a signal (`SIGSTOP`).
#[cfg(test)]
pub(crate) fn is_stopped(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|fields| fields.first().is_some_and(|state| state == "T"))
}

/// The direct children of `pid` (PostgreSQL's backends and workers are the
/// postmaster's).
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&candidate| {
            stat_fields(candidate)
                .and_then(|fields| fields.get(1)?.parse::<u32>().ok())
                .is_some_and(|ppid| ppid == pid)
        })
        .collect()
}

/// The command line of `pid`, arguments separated by spaces.
pub(crate) fn cmdline(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
        .unwrap_or_default()
}

/// `name` in the first of `dirs` that has it, else on `PATH`.
pub(crate) fn find_program(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    dirs.iter()
        .chain(path_dirs.iter())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Runs `command`; a non-zero exit is [`Error::Command`] with the end of
/// its output.
pub(crate) fn run(what: &str, command: &mut Command) -> Result<Output, Error> {
    let output = command.output().map_err(|e| Error::io(what, e))?;
    if output.status.success() {
        return Ok(output);
    }
    let mut detail = format!("{}; ", output.status);
    detail.push_str(&last_chars(&String::from_utf8_lossy(&output.stderr), 1500));
    detail.push_str(&last_chars(&String::from_utf8_lossy(&output.stdout), 500));
    Err(Error::Command {
        what: what.to_string(),
        detail,
    })
}

/// The last `n` characters of `text`.
pub(crate) fn last_chars(text: &str, n: usize) -> String {
    let skip = text.chars().count().saturating_sub(n);
    text.chars().skip(skip).collect()
}

/// The end of a log file, for error messages.
pub(crate) fn log_tail(path: &Path) -> String {
    fs::read_to_string(path)
        .map(|log| last_chars(&log, 1500))
        .unwrap_or_else(|e| format!("(no log at {}: {e})", path.display()))
}

/// Polls `ready` every 20 ms until it holds or `timeout` passes.
pub(crate) fn wait_for(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout(format!("{what} after {timeout:?}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Where every scratch directory lives.
fn scratch_root() -> PathBuf {
    std::env::temp_dir().join("opsdeck-testing")
}

const OWNER_FILE: &str = "owner.pid";

/// A directory of one private service: `<tmp>/opsdeck-testing/<kind>-<pid>-<n>`,
/// holding the PID of the test process that owns it.
pub(crate) fn scratch_dir(kind: &str) -> Result<PathBuf, Error> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let root = scratch_root();
    fs::create_dir_all(&root).map_err(|e| Error::io(format!("create {}", root.display()), e))?;
    // Other users (postgres, when we run as root) must traverse it.
    set_mode(&root, 0o755)?;
    let owner = std::process::id();
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = root.join(format!("{kind}-{owner}-{n}"));
        match fs::create_dir(&dir) {
            Ok(()) => {
                set_mode(&dir, 0o755)?;
                fs::write(dir.join(OWNER_FILE), owner.to_string())
                    .map_err(|e| Error::io(format!("write {}", dir.display()), e))?;
                return Ok(dir);
            }
            // Left over from an earlier process with the same PID.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(format!("create {}", dir.display()), e)),
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("chmod {}", path.display()), e))
}

/// Removes the `kind` directories whose owning test process is gone, after
/// `stop` has ended what ran in each (it must only signal processes whose
/// command line names that directory: PIDs are reused).
pub(crate) fn sweep_stale(kind: &str, stop: impl Fn(&Path)) {
    let Ok(entries) = fs::read_dir(scratch_root()) else {
        return;
    };
    let prefix = format!("{kind}-");
    for entry in entries.flatten() {
        let dir = entry.path();
        let named_ours = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(&prefix));
        if !named_ours {
            continue;
        }
        let owner = fs::read_to_string(dir.join(OWNER_FILE))
            .ok()
            .and_then(|pid| pid.trim().parse::<u32>().ok());
        // Without an owner file the directory is being created right now.
        if owner.is_some_and(|pid| !is_alive(pid)) {
            stop(&dir);
            if let Err(error) = fs::remove_dir_all(&dir) {
                eprintln!("could not remove stale {}: {error}", dir.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_has_a_command_line() {
        let me = std::process::id();
        assert!(is_alive(me));
        assert!(!cmdline(me).is_empty());
        assert!(!is_alive(u32::MAX));
    }

    #[test]
    fn children_are_found_and_signals_reach_them() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        assert!(children_of(std::process::id()).contains(&child.id()));
        signal(child.id(), "KILL").unwrap();
        child.wait().unwrap();
        assert!(signal(child.id(), "KILL").is_err(), "already reaped");
    }

    #[test]
    fn stale_directories_are_swept_and_live_ones_kept() {
        let live = scratch_dir("sweeptest").unwrap();
        let stale = scratch_root().join(format!("sweeptest-{}-x", u32::MAX));
        fs::create_dir_all(&stale).unwrap();
        fs::write(stale.join(OWNER_FILE), u32::MAX.to_string()).unwrap();
        let stopped = std::sync::Mutex::new(Vec::new());
        sweep_stale("sweeptest", |dir| {
            stopped.lock().unwrap().push(dir.to_path_buf())
        });
        assert_eq!(*stopped.lock().unwrap(), vec![stale.clone()]);
        assert!(!stale.exists());
        assert!(live.exists());
        fs::remove_dir_all(live).unwrap();
    }

    #[test]
    fn failures_carry_the_output() {
        let err = run("false", &mut Command::new("false")).unwrap_err();
        assert!(err.to_string().contains("false failed"), "{err}");
        assert!(wait_for("never", Duration::from_millis(30), || false).is_err());
        assert_eq!(last_chars("abcdef", 2), "ef");
        assert!(log_tail(Path::new("/nonexistent/log")).contains("no log"));
        assert!(find_program("sh", &[]).is_some());
        assert!(find_program("surely-not-a-program-xyz", &[]).is_none());
    }
}
