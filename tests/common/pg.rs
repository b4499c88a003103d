//! A real Postgres for tests: `initdb` into a temporary folder, `postgres` listening on
//! 127.0.0.1 at a free port (socket in the same folder), stopped and removed on drop.
//! Postgres refuses to run as root: as root, every command runs as the `postgres` system
//! user (created by Debian's `postgresql` package; `scripts/install-test-deps.sh`
//! installs it). A watchdog stops the server if the test process dies without dropping it.
//! Every wait is bounded.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Pg {
    /// `postgres://relais@127.0.0.1:PORT/postgres` (trust authentication, no password).
    pub url: String,
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    user: Option<String>,
    server: Child,
    watchdog: Option<Child>,
    _dir: tempfile::TempDir,
}

/// The newest `/usr/lib/postgresql/*/bin` with `initdb`, or `RELAIS_PG_BIN`.
fn bin_dir() -> PathBuf {
    if let Ok(p) = std::env::var("RELAIS_PG_BIN") {
        return PathBuf::from(p);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b).unwrap_or_else(|| {
        panic!(
            "Postgres binaries not found under /usr/lib/postgresql/*/bin: \
             run scripts/install-test-deps.sh (apt-get install postgresql) or set RELAIS_PG_BIN"
        )
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn id_of(user: &str, flag: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, user])
        .output()
        .expect("run id");
    assert!(
        out.status.success(),
        "no system user `{user}` to run Postgres as"
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("numeric id")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl Pg {
    fn cmd(&self, prog: &str) -> Command {
        cmd(&self.bin, self.user.as_deref(), prog)
    }

    /// Starts a fresh server (about a second or two).
    pub async fn start() -> Pg {
        // A free port can be taken between probing and binding: try a few.
        for _ in 0..5 {
            if let Some(pg) = Pg::try_start().await {
                return pg;
            }
        }
        panic!("postgres could not bind a free port in 5 tries");
    }

    async fn try_start() -> Option<Pg> {
        let bin = bin_dir();
        let user = is_root().then(|| "postgres".to_owned());
        let dir = tempfile::Builder::new()
            .prefix("relais-pg-")
            .tempdir()
            .expect("temp dir");
        if let Some(u) = &user {
            std::os::unix::fs::chown(dir.path(), Some(id_of(u, "-u")), Some(id_of(u, "-g")))
                .expect("chown the Postgres folder");
        }
        let data = dir.path().join("data");
        let out = cmd(&bin, user.as_deref(), "initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "relais", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let log = dir.path().join("postgres.log");
        let server = spawn_server(&bin, user.as_deref(), &data, dir.path(), port, &log);
        let mut pg = Pg {
            url: format!("postgres://relais@127.0.0.1:{port}/postgres"),
            port,
            bin,
            data,
            user,
            server,
            watchdog: None,
            _dir: dir,
        };
        pg.watchdog = pg.spawn_watchdog();
        // On failure, dropping `pg` stops the attempt and removes its folder.
        pg.wait_ready(&log).await.then_some(pg)
    }

    /// True once a connection succeeds; false if the server exited because its port was
    /// taken; panics on any other failure or after 30 s.
    async fn wait_ready(&mut self, log: &Path) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.server.try_wait() {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                if text.contains("Address already in use") {
                    return false;
                }
                panic!("postgres exited ({status}): {text}");
            }
            if let Ok(Ok((client, conn))) = tokio::time::timeout(
                Duration::from_secs(2),
                tokio_postgres::connect(&self.url, tokio_postgres::NoTls),
            )
            .await
            {
                drop(client);
                drop(conn);
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "postgres not ready within 30 s: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the server if this process dies without dropping `Pg`.
    fn spawn_watchdog(&self) -> Option<Child> {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = match &self.user {
            Some(u) => format!("runuser -u {u} -- '{}'", pg_ctl.display()),
            None => format!("'{}'", pg_ctl.display()),
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             {stop} -D '{data}' stop -m immediate -s -t 10 >/dev/null 2>&1",
            pid = std::process::id(),
            data = self.data.display()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()
    }

    /// Stops the server (fast shutdown: open connections are cut), as a database outage.
    pub fn stop_server(&mut self) {
        self.pg_ctl_stop("fast");
        let _ = self.server.wait();
    }

    /// `pg_ctl stop` in `mode` (`fast`, `immediate`), bounded by its own 10 s timeout.
    fn pg_ctl_stop(&self, mode: &str) {
        let _ = self
            .cmd("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["stop", "-m", mode, "-s", "-t", "10"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Starts the stopped server again on the same port and data.
    pub async fn restart(&mut self) {
        let dir = self._dir.path().to_path_buf();
        let log = dir.join("postgres-restart.log");
        self.server = spawn_server(
            &self.bin,
            self.user.as_deref(),
            &self.data,
            &dir,
            self.port,
            &log,
        );
        assert!(
            self.wait_ready(&log).await,
            "port {} taken during the restart",
            self.port
        );
    }

    /// A new client connection (for tests that read or lock tables themselves).
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_postgres::connect(&self.url, tokio_postgres::NoTls),
        )
        .await
        .expect("connect within 10 s")
        .expect("connect to test postgres");
        tokio::spawn(conn);
        client
    }
}

fn spawn_server(
    bin: &Path,
    user: Option<&str>,
    data: &Path,
    dir: &Path,
    port: u16,
    log: &Path,
) -> Child {
    cmd(bin, user, "postgres")
        .arg("-D")
        .arg(data)
        .arg("-k")
        .arg(dir)
        .args(["-p", &port.to_string()])
        .args(["-c", "listen_addresses=127.0.0.1"])
        .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
        .args(["-c", "full_page_writes=off", "-c", "max_connections=40"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("spawn postgres")
}

fn cmd(bin: &Path, user: Option<&str>, prog: &str) -> Command {
    let path = bin.join(prog);
    match user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--"]).arg(path);
            c
        }
        None => Command::new(path),
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.pg_ctl_stop("immediate");
        let _ = self.server.kill();
        let _ = self.server.wait();
        if let Some(w) = &mut self.watchdog {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}
