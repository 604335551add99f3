//! The server under test: a child process the sim owns (started on a temporary data
//! dir, killed and restarted on the same port in the crash scenario, measured from
//! `/proc`), or an existing one it only connects to.

use anyhow::{Context, bail};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A server process the sim started.
#[derive(Debug)]
pub struct OwnedServer {
    binary: PathBuf,
    core: Option<usize>,
    config_path: PathBuf,
    config: String,
    child: Option<Child>,
    pub ws: String,
    pub admin: String,
    /// Times the sim killed it.
    pub kills: u32,
    /// CPU seconds and peak RSS of the processes killed so far (a restart starts both
    /// afresh in /proc).
    killed_cpu_seconds: f64,
    killed_peak_rss: u64,
    _dir: tempfile::TempDir,
}

/// The first line a server prints names its addresses: `... ws=HOST:PORT admin=HOST:PORT`.
/// Read on a thread of its own, so that the wait is bounded by `within`. (The server's
/// own tests start their servers through this too.)
pub fn read_addresses(child: &mut Child, within: Duration) -> anyhow::Result<(String, String)> {
    let stdout = child.stdout.take().context("the server's stdout")?;
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = sender.send(line);
    });
    let line = receiver
        .recv_timeout(within)
        .with_context(|| format!("the server did not print its addresses within {within:?}"))?;
    let word = |prefix: &str| {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(prefix))
            .map(str::to_owned)
    };
    match (word("ws="), word("admin=")) {
        (Some(ws), Some(admin)) => Ok((ws, admin)),
        _ => bail!("the server's first line does not name its addresses: {line:?}"),
    }
}

impl OwnedServer {
    /// Starts `binary` on a fresh data dir with `config` (TOML; it must listen on
    /// 127.0.0.1:0, which is replaced by the bound ports for restarts).
    pub fn start(binary: &Path, core: Option<usize>, config: String) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("a temporary data dir")?;
        let config = config.replace("{data_dir}", &dir.path().join("data").display().to_string());
        let config_path = dir.path().join("playtree.toml");
        let mut server = OwnedServer {
            binary: binary.to_owned(),
            core,
            config_path,
            config,
            child: None,
            ws: String::new(),
            admin: String::new(),
            kills: 0,
            killed_cpu_seconds: 0.0,
            killed_peak_rss: 0,
            _dir: dir,
        };
        server.spawn()?;
        // Restarts bind the same ports, so that clients reconnect where they were.
        server.config = server
            .config
            .replacen(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"{}\"", server.ws),
                1,
            )
            .replacen(
                "admin_listen = \"127.0.0.1:0\"",
                &format!("admin_listen = \"{}\"", server.admin),
                1,
            );
        Ok(server)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        std::fs::write(&self.config_path, &self.config).context("writing the server config")?;
        let mut command = match self.core {
            Some(core) => {
                let mut command = Command::new("taskset");
                command.args(["-c", &core.to_string()]).arg(&self.binary);
                command
            }
            None => Command::new(&self.binary),
        };
        command
            .arg("--config")
            .arg(&self.config_path)
            .arg("serve")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // The developer's own PLAYTREE_* settings would override the sim's config.
        for (name, _) in std::env::vars() {
            if name.starts_with("PLAYTREE_") {
                command.env_remove(name);
            }
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        // Recovery after a kill replays the journal: give it time, but not forever.
        let (ws, admin) = match read_addresses(&mut child, Duration::from_secs(120)) {
            Ok(addresses) => addresses,
            Err(error) => {
                // Not left running: it would hold the ports and the data dir.
                let _ = child.kill();
                let _ = child.wait();
                return Err(error);
            }
        };
        self.ws = ws;
        self.admin = admin;
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, then a start on the same data dir and ports (retried briefly while the
    /// old ports are released).
    pub fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        let cpu = self.process_cpu_seconds().unwrap_or(0.0);
        let peak = self.process_memory().map_or(0, |(_, peak)| peak);
        if let Some(mut child) = self.child.take() {
            child.kill().context("SIGKILL")?;
            child.wait().context("reaping the killed server")?;
        }
        self.killed_cpu_seconds += cpu;
        self.killed_peak_rss = self.killed_peak_rss.max(peak);
        self.kills += 1;
        // A start that fails at once (the old ports not yet released) is tried again for
        // up to 10 s; one that starts and never reports its addresses is not.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let attempt = std::time::Instant::now();
            match self.spawn() {
                Ok(()) => return Ok(()),
                Err(error)
                    if std::time::Instant::now() < deadline
                        && attempt.elapsed() < Duration::from_secs(5) =>
                {
                    let _ = error;
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// CPU seconds (user + system) the server has used, killed processes included.
    pub fn cpu_seconds(&self) -> Option<f64> {
        Some(self.killed_cpu_seconds + self.process_cpu_seconds()?)
    }

    /// Resident memory now (`VmRSS`) and at its peak over every process (`VmHWM`).
    pub fn memory(&self) -> Option<(u64, u64)> {
        let (rss, peak) = self.process_memory()?;
        Some((rss, peak.max(self.killed_peak_rss)))
    }

    fn process_cpu_seconds(&self) -> Option<f64> {
        process_cpu(&self.pid()?.to_string())
    }

    fn process_memory(&self) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse::<u64>().ok())
                .map(|kib| kib * 1024)
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }
}

impl Drop for OwnedServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// CPU seconds (user + system) of process `pid`, from `/proc/<pid>/stat`.
fn process_cpu(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clock_ticks_per_second())
}

/// The sim's own CPU seconds: a sim near one core's worth is the limit of a run, not the
/// server.
pub fn own_cpu_seconds() -> Option<f64> {
    process_cpu("self")
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8_lossy(&output.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}
