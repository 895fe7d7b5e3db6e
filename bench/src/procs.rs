//! The processes of a benchmark run: started pinned to a core with `taskset`, waited for until
//! they serve, read from `/proc` (CPU time, resident memory) and killed when dropped.

use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The core the systems under test run on.
pub const SERVER_CORE: usize = 0;
/// The core the load generator and the mock upstream run on.
pub const LOAD_CORE: usize = 1;

/// A running process, killed when dropped.
#[derive(Debug)]
pub struct Proc {
    /// What it is, for messages.
    pub name: String,
    child: Child,
}

impl Proc {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time used so far by all its threads (from `/proc/<pid>/task/*/schedstat`, in ns).
    pub fn cpu_ns(&self) -> anyhow::Result<u64> {
        let tasks = format!("/proc/{}/task", self.pid());
        let mut total = 0;
        for task in std::fs::read_dir(&tasks).with_context(|| format!("reading {tasks}"))? {
            let path = task?.path().join("schedstat");
            // A thread may end between the listing and the read.
            if let Ok(text) = std::fs::read_to_string(&path) {
                total += text
                    .split_whitespace()
                    .next()
                    .and_then(|ns| ns.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        Ok(total)
    }

    /// Resident memory now (`VmRSS`) and at its peak (`VmHWM`), in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<(u64, u64)> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok((field("VmRSS:"), field("VmHWM:")))
    }

    /// Resets the process's peak resident memory (`VmHWM`) to what it holds now (Linux's
    /// `clear_refs`, value 5), so a later peak is the peak since this call: a gateway's start
    /// (compiling components the shared cache does not hold yet) is not counted as load.
    pub fn reset_peak_rss(&self) -> anyhow::Result<()> {
        let path = format!("/proc/{}/clear_refs", self.pid());
        std::fs::write(&path, "5").with_context(|| format!("writing 5 to {path}"))
    }

    /// Fails if the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited during the run ({status})", self.name);
        }
        Ok(())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `command` wrapped in `taskset -c <core>` (which execs it: same pid).
pub fn pinned(core: usize, program: &Path) -> Command {
    let mut command = Command::new("taskset");
    command.arg("-c").arg(core.to_string()).arg(program);
    command
}

/// Pins this process (every thread it has, and so every thread it starts) to `core`. The
/// harness itself runs beside the load generator: the threads draining the gateway's output
/// (the logging plugin writes a line per request) are woken by each line, and woken on the
/// server core they would take their share of it from the gateway being measured.
pub fn pin_self(core: usize) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args([
            "-a",
            "-p",
            "-c",
            &core.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .status()
        .context("running taskset (util-linux) to pin the harness")?;
    anyhow::ensure!(
        status.success(),
        "taskset could not pin the harness to core {core}: {status}"
    );
    Ok(())
}

/// Starts `command` and returns once a line of its `stream` (stdout or stderr) contains
/// `marker`; the rest of that stream is drained in the background. Returns the process, the
/// line and how long it took.
pub fn start_until_line(
    name: &str,
    mut command: Command,
    stream: Stream,
    marker: &str,
) -> anyhow::Result<(Proc, String, Duration)> {
    let started = Instant::now();
    match stream {
        Stream::Stdout => command.stdout(Stdio::piped()).stderr(Stdio::null()),
        Stream::Stderr => command.stderr(Stdio::piped()).stdout(Stdio::null()),
    };
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {name}: {command:?}"))?;
    let pipe: Box<dyn std::io::Read + Send> = match stream {
        Stream::Stdout => Box::new(child.stdout.take().context("no stdout")?),
        Stream::Stderr => Box::new(child.stderr.take().context("no stderr")?),
    };
    let proc = Proc {
        name: name.to_string(),
        child,
    };
    let mut lines = BufReader::new(pipe).lines();
    let line = loop {
        match lines.next() {
            Some(Ok(line)) if line.contains(marker) => break line,
            Some(Ok(_)) => {}
            _ => bail!("{name} exited before printing {marker:?}"),
        }
    };
    let elapsed = started.elapsed();
    std::thread::spawn(move || for _ in lines {});
    Ok((proc, line, elapsed))
}

/// Which output stream announces readiness.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Starts `command` (which does not announce itself) and waits until `addr` accepts
/// connections.
pub fn start_until_listening(
    name: &str,
    mut command: Command,
    addr: SocketAddr,
) -> anyhow::Result<Proc> {
    command.stdout(Stdio::null()).stderr(Stdio::inherit());
    let child = command
        .spawn()
        .with_context(|| format!("starting {name}: {command:?}"))?;
    let mut proc = Proc {
        name: name.to_string(),
        child,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        proc.check_alive()?;
        if Instant::now() > deadline {
            bail!("{name} did not listen on {addr} within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(proc)
}

/// A loopback port free right now (for programs that need one in their config).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The address in a line such as `... http://127.0.0.1:40123/v1/...`.
pub fn addr_in(line: &str) -> anyhow::Result<SocketAddr> {
    let text = line
        .rsplit_once("http://")
        .map(|(_, rest)| rest)
        .or_else(|| line.rsplit_once("listening on ").map(|(_, rest)| rest))
        .context("no address in the line")?;
    let addr = text.split(['/', ' ']).next().unwrap_or_default();
    addr.parse()
        .with_context(|| format!("{addr:?} in {line:?} is not an address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_found_in_both_announcements() {
        let gateway =
            "INFO wasmgate: wasmgate is serving: POST http://127.0.0.1:40123/v1/chat/completions";
        assert_eq!(addr_in(gateway).unwrap().port(), 40123);
        assert_eq!(
            addr_in("upstream listening on 127.0.0.1:555")
                .unwrap()
                .port(),
            555
        );
        assert!(addr_in("nothing here").is_err());
    }

    #[test]
    fn cpu_and_memory_of_a_live_process_are_read() {
        let child = Command::new("sleep").arg("5").spawn().unwrap();
        let proc = Proc {
            name: "sleep".into(),
            child,
        };
        proc.cpu_ns().unwrap();
        let (rss, peak) = proc.rss_kib().unwrap();
        assert!(rss > 0 && peak >= rss, "rss {rss} peak {peak}");
    }
}
