//! [`PrivatePostgres`]: a PostgreSQL cluster of the test's own.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use super::process::{
    children_of, cmdline, find_program, is_alive, is_root, log_tail, run, scratch_dir, signal,
    sweep_stale,
};
use super::{Error, free_port};

/// The PostgreSQL major version the helpers look for first.
const PG_MAJOR: &str = "15";
/// How long `pg_ctl` may wait for a start or a stop.
const PG_CTL_WAIT_SECS: &str = "30";
const KIND: &str = "pg";

/// A private PostgreSQL cluster: `initdb` into a scratch directory, started
/// with `pg_ctl` on a free port of 127.0.0.1, trust authentication for user
/// `postgres`. The test can [`stop`](Self::stop), [`start`](Self::start),
/// [`restart`](Self::restart), [`freeze`](Self::freeze) (`SIGSTOP` to the
/// postmaster and every backend: connections hang, as with a stalled host)
/// and [`thaw`](Self::thaw) it; [`PrivatePostgres::replica_of`] makes a
/// streaming replica of another one. `Drop` stops it (immediate mode) and
/// removes its directory.
///
/// When the test runs as root, the cluster's commands run as the
/// `postgres` user (PostgreSQL refuses root). Binaries are taken from
/// `OPSDECK_PG_BINDIR`, `/usr/lib/postgresql/15/bin`, then `PATH`.
/// Settings: `fsync = off` (no claim here survives an OS crash; a process
/// restart keeps everything committed), small shared buffers, WAL senders
/// for replicas.
#[derive(Debug)]
pub struct PrivatePostgres {
    dir: PathBuf,
    data: PathBuf,
    port: u16,
    bin: PathBuf,
    /// The processes a [`freeze`](Self::freeze) stopped.
    frozen: Mutex<Vec<u32>>,
}

impl PrivatePostgres {
    /// Creates and starts a new cluster (about a second).
    pub fn create() -> Result<Self, Error> {
        let bin = bindir()?;
        sweep_stale(KIND, stop_stale_cluster);
        let dir = scratch_dir(KIND)?;
        let data = dir.join("data");
        let cluster = PrivatePostgres {
            dir,
            data,
            port: 0,
            bin,
            frozen: Mutex::new(Vec::new()),
        };
        cluster.give_to_owner(&cluster.dir)?;
        cluster.run_as_owner(
            "initdb",
            cluster
                .owner_command("initdb")
                .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
                .arg("-D")
                .arg(&cluster.data),
        )?;
        cluster.start_on_a_free_port()
    }

    /// A streaming replica of `primary`: `pg_basebackup -R -X stream` into a
    /// new cluster, started on its own port as a hot standby (read-only).
    pub fn replica_of(primary: &PrivatePostgres) -> Result<Self, Error> {
        let dir = scratch_dir(KIND)?;
        let data = dir.join("data");
        let replica = PrivatePostgres {
            dir,
            data,
            port: 0,
            bin: primary.bin.clone(),
            frozen: Mutex::new(Vec::new()),
        };
        replica.give_to_owner(&replica.dir)?;
        replica.run_as_owner(
            "pg_basebackup",
            replica
                .owner_command("pg_basebackup")
                .args(["-h", "127.0.0.1", "-U", "postgres", "-R", "-X", "stream"])
                .args(["-c", "fast", "--no-sync", "-p"])
                .arg(primary.port.to_string())
                .arg("-D")
                .arg(&replica.data),
        )?;
        replica.start_on_a_free_port()
    }

    /// Binds a free port, retrying with another one if it was taken meanwhile.
    fn start_on_a_free_port(mut self) -> Result<Self, Error> {
        let mut last = None;
        for _ in 0..3 {
            self.port = free_port().map_err(|e| Error::io("find a free port", e))?;
            self.write_settings()?;
            match self.start() {
                Ok(()) => return Ok(self),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| Error::Timeout("no port".into())))
    }

    /// The cluster's settings, in a file of its own that `postgresql.conf`
    /// includes (a replica copies both and gets its port rewritten).
    fn write_settings(&self) -> Result<(), Error> {
        let settings = format!(
            "port = {port}\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{dir}'\n\
             fsync = off\n\
             shared_buffers = 32MB\n\
             max_connections = 80\n\
             max_wal_senders = 4\n\
             wal_keep_size = 64MB\n\
             log_min_messages = warning\n",
            port = self.port,
            dir = self.dir.display(),
        );
        let file = self.data.join("opsdeck-testing.conf");
        fs::write(&file, settings)
            .map_err(|e| Error::io(format!("write {}", file.display()), e))?;
        let main = self.data.join("postgresql.conf");
        let conf = fs::read_to_string(&main)
            .map_err(|e| Error::io(format!("read {}", main.display()), e))?;
        let include = "include = 'opsdeck-testing.conf'";
        if !conf.contains(include) {
            fs::write(&main, format!("{conf}\n{include}\n"))
                .map_err(|e| Error::io(format!("write {}", main.display()), e))?;
        }
        Ok(())
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address clients (or a [`super::TcpProxy`]) connect to.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The URL of database `postgres` as user `postgres`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The URL of `database` as user `postgres`.
    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The postmaster's PID, while it runs.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let pid = fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        let pid = pid.lines().next()?.trim().parse::<u32>().ok()?;
        is_alive(pid).then_some(pid)
    }

    /// Starts the cluster and waits until it accepts connections.
    pub fn start(&self) -> Result<(), Error> {
        let log = self.dir.join("postgres.log");
        self.run_as_owner(
            "pg_ctl start",
            self.owner_command("pg_ctl")
                .args(["start", "-w", "-t", PG_CTL_WAIT_SECS, "-D"])
                .arg(&self.data)
                .arg("-l")
                .arg(&log),
        )
        .map_err(|error| Error::Command {
            what: "pg_ctl start".into(),
            detail: format!("{error}\nlog: {}", log_tail(&log)),
        })?;
        Ok(())
    }

    /// Stops the cluster (fast mode: sessions are ended, committed work is
    /// kept), thawing it first if frozen.
    pub fn stop(&self) -> Result<(), Error> {
        self.thaw()?;
        self.pg_ctl_stop("fast")
    }

    /// Restarts the cluster (fast mode), thawing it first if frozen.
    pub fn restart(&self) -> Result<(), Error> {
        self.stop()?;
        self.start()
    }

    /// Stops (`SIGSTOP`) the postmaster and every process it started: open
    /// connections stall and new ones hang in the listen queue, as with a
    /// stalled host. Idempotent.
    pub fn freeze(&self) -> Result<(), Error> {
        let mut frozen = self.frozen.lock().unwrap_or_else(|p| p.into_inner());
        if !frozen.is_empty() {
            return Ok(());
        }
        let postmaster = self.postmaster_pid().ok_or_else(|| Error::Command {
            what: "freeze PostgreSQL".into(),
            detail: "the cluster is not running".into(),
        })?;
        // The postmaster first, so that it starts no new backend meanwhile.
        signal(postmaster, "STOP")?;
        frozen.push(postmaster);
        for child in children_of(postmaster) {
            if signal(child, "STOP").is_ok() {
                frozen.push(child);
            }
        }
        Ok(())
    }

    /// Resumes (`SIGCONT`) what [`freeze`](Self::freeze) stopped. Idempotent.
    pub fn thaw(&self) -> Result<(), Error> {
        let mut frozen = self.frozen.lock().unwrap_or_else(|p| p.into_inner());
        // Backends first: the postmaster then finds them running.
        for &pid in frozen.iter().rev() {
            // A backend may have been ended meanwhile; that is fine.
            let _ = signal(pid, "CONT");
        }
        frozen.clear();
        Ok(())
    }

    /// Whether [`freeze`](Self::freeze) is in effect.
    pub fn is_frozen(&self) -> bool {
        !self
            .frozen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    fn pg_ctl_stop(&self, mode: &str) -> Result<(), Error> {
        if self.postmaster_pid().is_none() {
            return Ok(());
        }
        self.run_as_owner(
            "pg_ctl stop",
            self.owner_command("pg_ctl")
                .args(["stop", "-w", "-t", PG_CTL_WAIT_SECS, "-m", mode, "-D"])
                .arg(&self.data),
        )
        .map(drop)
    }

    /// A command running `program` of the cluster's bindir as the owner.
    fn owner_command(&self, program: &str) -> Command {
        owner_command(&self.bin.join(program))
    }

    fn run_as_owner(&self, what: &str, command: &mut Command) -> Result<(), Error> {
        run(what, command.current_dir(&self.dir)).map(drop)
    }

    /// Hands `dir` to the `postgres` user when running as root.
    fn give_to_owner(&self, dir: &Path) -> Result<(), Error> {
        if !is_root() {
            return Ok(());
        }
        let id = |flag: &str| -> Result<u32, Error> {
            let output = run("id postgres", Command::new("id").args([flag, "postgres"]))?;
            String::from_utf8_lossy(&output.stdout)
                .trim()
                .parse()
                .map_err(|_| Error::MissingTool {
                    tool: "the postgres user",
                    hint: "PostgreSQL cannot run as root; install postgresql-15".into(),
                })
        };
        std::os::unix::fs::chown(dir, Some(id("-u")?), Some(id("-g")?))
            .map_err(|e| Error::io(format!("chown {}", dir.display()), e))
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.thaw();
        if let Err(error) = self.pg_ctl_stop("immediate") {
            eprintln!("private PostgreSQL on port {}: {error}", self.port);
        }
        // pg_ctl gave up: end what is left of ours, by PID.
        if let Some(postmaster) = self.postmaster_pid() {
            for pid in children_of(postmaster).into_iter().chain([postmaster]) {
                let _ = signal(pid, "KILL");
            }
        }
        if let Err(error) = fs::remove_dir_all(&self.dir) {
            eprintln!("could not remove {}: {error}", self.dir.display());
        }
    }
}

/// `program`, run as `postgres` through `runuser` when we are root.
fn owner_command(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// The directory holding initdb, pg_ctl and pg_basebackup.
fn bindir() -> Result<PathBuf, Error> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("OPSDECK_PG_BINDIR")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    dirs.push(PathBuf::from(format!("/usr/lib/postgresql/{PG_MAJOR}/bin")));
    let initdb = find_program("initdb", &dirs).ok_or_else(|| Error::MissingTool {
        tool: "initdb",
        hint: format!(
            "looked in OPSDECK_PG_BINDIR, /usr/lib/postgresql/{PG_MAJOR}/bin and PATH; \
             apt-get install postgresql-{PG_MAJOR}"
        ),
    })?;
    // Follow a symlink (e.g. /usr/local/bin/initdb) to the real bindir.
    let initdb = fs::canonicalize(&initdb).unwrap_or(initdb);
    let dir = initdb
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    for tool in ["pg_ctl", "pg_basebackup", "postgres"] {
        if !dir.join(tool).is_file() {
            return Err(Error::MissingTool {
                tool: "pg_ctl/pg_basebackup/postgres",
                hint: format!("not next to initdb in {}", dir.display()),
            });
        }
    }
    if is_root() && find_program("runuser", &[]).is_none() {
        return Err(Error::MissingTool {
            tool: "runuser",
            hint: "needed to run PostgreSQL as postgres when the tests run as root".into(),
        });
    }
    Ok(dir)
}

/// Stops the cluster of a stale directory, if its postmaster still runs.
fn stop_stale_cluster(dir: &Path) {
    let data = dir.join("data");
    let Some(pid) = fs::read_to_string(data.join("postmaster.pid"))
        .ok()
        .and_then(|pid| pid.lines().next()?.trim().parse::<u32>().ok())
    else {
        return;
    };
    // Only a postmaster serving this very directory (PIDs are reused).
    if is_alive(pid) && cmdline(pid).contains(&data.display().to_string()) {
        for child in children_of(pid) {
            let _ = signal(child, "CONT");
            let _ = signal(child, "KILL");
        }
        let _ = signal(pid, "CONT");
        let _ = signal(pid, "KILL");
    }
}

#[cfg(test)]
mod tests {
    use super::super::or_skip;
    use std::time::Duration;

    use super::super::process::is_stopped;
    use super::*;

    fn accepts_connections(cluster: &PrivatePostgres) -> bool {
        std::net::TcpStream::connect_timeout(&cluster.addr(), Duration::from_secs(1)).is_ok()
    }

    #[test]
    fn a_private_cluster_starts_freezes_restarts_and_is_removed() {
        let Some(cluster) = or_skip(PrivatePostgres::create()) else {
            return;
        };
        assert_ne!(cluster.port(), 5432);
        assert!(
            cluster
                .url()
                .ends_with(&format!(":{}/postgres", cluster.port()))
        );
        let first = cluster.postmaster_pid().expect("running");
        assert!(accepts_connections(&cluster));

        cluster.freeze().unwrap();
        cluster.freeze().unwrap();
        assert!(cluster.is_frozen() && is_stopped(first));
        cluster.thaw().unwrap();
        assert!(!cluster.is_frozen() && !is_stopped(first));

        cluster.restart().unwrap();
        let second = cluster.postmaster_pid().expect("running again");
        assert_ne!(first, second);
        cluster.stop().unwrap();
        assert!(cluster.postmaster_pid().is_none());
        assert!(!accepts_connections(&cluster));
        cluster.start().unwrap();
        assert!(accepts_connections(&cluster));

        let dir = cluster.dir.clone();
        let postmaster = cluster.postmaster_pid().unwrap();
        cluster.freeze().unwrap();
        drop(cluster);
        assert!(!dir.exists(), "Drop removes the cluster, frozen or not");
        assert!(!is_alive(postmaster));
    }

    #[test]
    fn binaries_are_found_or_reported_missing() {
        match bindir() {
            Ok(dir) => assert!(dir.join("pg_ctl").is_file()),
            Err(error) => assert!(error.is_missing_tool(), "{error}"),
        }
    }
}
