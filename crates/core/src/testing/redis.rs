//! [`PrivateRedis`]: a Redis server of the test's own.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use super::process::{
    cmdline, find_program, is_alive, log_tail, scratch_dir, signal, sweep_stale, wait_for,
};
use super::{Error, free_port};

const KIND: &str = "redis";
const PID_FILE: &str = "redis.pid";

/// A private Redis server: `redis-server --port P --save "" --appendonly no`
/// as a child process of the test, on 127.0.0.1. The test can
/// [`stop`](Self::stop) it (its data is gone, as after a crash of a cache),
/// [`start`](Self::start) it again on the same port, [`freeze`](Self::freeze)
/// (`SIGSTOP`) and [`thaw`](Self::thaw) it. `Drop` kills it and removes its
/// directory.
#[derive(Debug)]
pub struct PrivateRedis {
    dir: PathBuf,
    port: u16,
    program: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    child: Option<Child>,
    frozen: bool,
}

impl PrivateRedis {
    /// Starts a new server on a free port.
    pub fn create() -> Result<Self, Error> {
        let program = find_program("redis-server", &[]).ok_or_else(|| Error::MissingTool {
            tool: "redis-server",
            hint: "not on PATH; apt-get install redis-server".into(),
        })?;
        sweep_stale(KIND, stop_stale_server);
        let mut redis = PrivateRedis {
            dir: scratch_dir(KIND)?,
            port: 0,
            program,
            state: Mutex::new(State::default()),
        };
        let mut last = None;
        for _ in 0..3 {
            redis.port = free_port().map_err(|e| Error::io("find a free port", e))?;
            match redis.start() {
                Ok(()) => return Ok(redis),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| Error::Timeout("no port".into())))
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address clients (or a [`super::TcpProxy`]) connect to.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        let mut state = self.state();
        let child = state.child.as_mut()?;
        match child.try_wait() {
            Ok(None) => Some(child.id()),
            _ => None,
        }
    }

    /// Starts the server (if it is not running) and waits until it answers
    /// `PING`.
    pub fn start(&self) -> Result<(), Error> {
        if self.pid().is_some() {
            return Ok(());
        }
        let log_path = self.dir.join("redis.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Error::io(format!("open {}", log_path.display()), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| Error::io("clone the log handle", e))?;
        let child = Command::new(&self.program)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| Error::io("spawn redis-server", e))?;
        fs::write(
            self.dir.join(PID_FILE),
            format!("{} {}", child.id(), self.port),
        )
        .map_err(|e| Error::io("write redis.pid", e))?;
        {
            let mut state = self.state();
            state.child = Some(child);
            state.frozen = false;
        }
        let ready = wait_for(
            "redis-server answering PING",
            Duration::from_secs(10),
            || self.pid().is_none() || ping(self.addr()),
        );
        if self.pid().is_none() || ready.is_err() {
            self.kill();
            return Err(Error::Command {
                what: format!("redis-server on port {}", self.port),
                detail: log_tail(&log_path),
            });
        }
        Ok(())
    }

    /// Stops the server (`SIGKILL`; it keeps nothing, so nothing is lost
    /// that a clean shutdown would have kept).
    pub fn stop(&self) -> Result<(), Error> {
        self.kill();
        Ok(())
    }

    /// Stops and starts the server on the same port (empty).
    pub fn restart(&self) -> Result<(), Error> {
        self.stop()?;
        self.start()
    }

    /// Stops (`SIGSTOP`) the server: connections stay open but nothing is
    /// answered, as with a stalled host. Idempotent.
    pub fn freeze(&self) -> Result<(), Error> {
        let pid = self.pid().ok_or_else(|| Error::Command {
            what: "freeze Redis".into(),
            detail: "the server is not running".into(),
        })?;
        let mut state = self.state();
        if !state.frozen {
            signal(pid, "STOP")?;
            state.frozen = true;
        }
        Ok(())
    }

    /// Resumes (`SIGCONT`) a frozen server. Idempotent.
    pub fn thaw(&self) -> Result<(), Error> {
        let pid = self.pid();
        let mut state = self.state();
        if let (true, Some(pid)) = (state.frozen, pid) {
            signal(pid, "CONT")?;
        }
        state.frozen = false;
        Ok(())
    }

    /// Whether [`freeze`](Self::freeze) is in effect.
    pub fn is_frozen(&self) -> bool {
        self.state().frozen
    }

    fn kill(&self) {
        let mut state = self.state();
        if let Some(mut child) = state.child.take() {
            // SIGKILL also ends a stopped process.
            let _ = child.kill();
            let _ = child.wait();
        }
        state.frozen = false;
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        if let Err(error) = fs::remove_dir_all(&self.dir) {
            eprintln!("could not remove {}: {error}", self.dir.display());
        }
    }
}

/// Whether a Redis server at `addr` answers `PING` within a second.
fn ping(addr: SocketAddr) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        stream.write_all(b"PING\r\n")?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply)?;
        Ok(&reply == b"+PONG\r\n")
    };
    attempt().unwrap_or(false)
}

/// Kills the server of a stale directory, if it still runs.
fn stop_stale_server(dir: &Path) {
    let Some((pid, port)) = fs::read_to_string(dir.join(PID_FILE))
        .ok()
        .and_then(|file| {
            let (pid, port) = file.trim().split_once(' ')?;
            Some((pid.parse::<u32>().ok()?, port.parse::<u16>().ok()?))
        })
    else {
        return;
    };
    // Only the redis-server of this very directory, which names its port in
    // its process title (PIDs are reused; the shared server is never on a
    // port we picked, as it was bound when we picked it).
    let title = cmdline(pid);
    if is_alive(pid) && title.contains("redis-server") && title.contains(&format!(":{port}")) {
        let _ = signal(pid, "CONT");
        let _ = signal(pid, "KILL");
    }
}

#[cfg(test)]
mod tests {
    use super::super::or_skip;
    use super::*;

    #[test]
    fn a_private_server_stops_freezes_and_is_removed() {
        let Some(redis) = or_skip(PrivateRedis::create()) else {
            return;
        };
        assert_ne!(redis.port(), 6379);
        assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
        assert!(ping(redis.addr()));

        redis.freeze().unwrap();
        assert!(redis.is_frozen());
        assert!(!ping(redis.addr()), "a frozen server answers nothing");
        redis.thaw().unwrap();
        assert!(ping(redis.addr()));

        redis.stop().unwrap();
        assert!(redis.pid().is_none() && !ping(redis.addr()));
        assert!(redis.freeze().is_err(), "nothing to freeze");
        redis.start().unwrap();
        redis.start().unwrap();
        assert!(ping(redis.addr()));

        let (dir, pid) = (redis.dir.clone(), redis.pid().unwrap());
        redis.freeze().unwrap();
        drop(redis);
        assert!(!dir.exists() && !is_alive(pid));
    }

    #[test]
    fn stale_servers_are_only_killed_when_they_are_ours() {
        let dir = scratch_dir("redischeck").unwrap();
        // A live process that is not a redis-server of ours survives.
        let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
        fs::write(dir.join(PID_FILE), format!("{} 1", sleeper.id())).unwrap();
        stop_stale_server(&dir);
        assert!(is_alive(sleeper.id()));
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        fs::remove_dir_all(dir).unwrap();
    }
}
