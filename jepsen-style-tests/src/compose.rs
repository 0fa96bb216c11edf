//! The compose cluster's lifecycle: a fresh project under a unique name,
//! always torn down (also on error, panic or Ctrl-C), and the docker
//! commands the nemesis needs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

/// Longest any one docker or compose command may take.
pub const DOCKER_COMMAND_SECONDS_MAX: u64 = 120;

/// The services of the cluster, node id `i + 1` at index `i`.
pub const SERVICES: [&str; 3] = ["node1", "node2", "node3"];

/// `docker compose` (v2) or `docker-compose` (v1).
#[derive(Clone, Debug)]
pub enum ComposeTool {
    V2,
    V1,
}

impl ComposeTool {
    pub fn detect() -> anyhow::Result<ComposeTool> {
        let v2 = Command::new("docker").args(["compose", "version"]).output();
        if v2.is_ok_and(|o| o.status.success()) {
            return Ok(ComposeTool::V2);
        }
        let v1 = Command::new("docker-compose").arg("version").output();
        if v1.is_ok_and(|o| o.status.success()) {
            return Ok(ComposeTool::V1);
        }
        bail!("neither `docker compose` nor `docker-compose` works on this machine")
    }

    fn command(&self) -> Command {
        match self {
            ComposeTool::V2 => {
                let mut c = Command::new("docker");
                c.arg("compose");
                c
            }
            ComposeTool::V1 => Command::new("docker-compose"),
        }
    }
}

/// One compose project of the cluster.
#[derive(Clone, Debug)]
pub struct Compose {
    pub tool: ComposeTool,
    pub project: String,
    pub file: PathBuf,
    pub env_file: PathBuf,
    pub image: String,
    pub ports: [u16; 3],
}

/// Runs a command with a deadline; its stdout on success.
pub fn run_bounded(mut cmd: Command, what: &str) -> anyhow::Result<String> {
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    // The pipes are drained while waiting, so a chatty command cannot block.
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(DOCKER_COMMAND_SECONDS_MAX)) {
        Ok(out) => out.with_context(|| format!("waiting for {what}"))?,
        Err(_) => {
            // Only the process this function started, by its id.
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            bail!("{what} took longer than {DOCKER_COMMAND_SECONDS_MAX} s");
        }
    };
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// [`run_bounded`] off the async runtime's threads.
pub async fn run_async(cmd: Command, what: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || run_bounded(cmd, &what))
        .await
        .context("docker command task")?
}

pub fn docker(args: &[&str]) -> Command {
    let mut c = Command::new("docker");
    c.args(args);
    c
}

impl Compose {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.tool.command();
        c.arg("-p").arg(&self.project).arg("-f").arg(&self.file);
        c.args(args);
        c.env("SPENDCAP_IMAGE", &self.image)
            .env("SPENDCAP_ENV_FILE", &self.env_file)
            .env("SPENDCAP_NODE1_PORT", self.ports[0].to_string())
            .env("SPENDCAP_NODE2_PORT", self.ports[1].to_string())
            .env("SPENDCAP_NODE3_PORT", self.ports[2].to_string());
        c
    }

    pub fn up(&self) -> anyhow::Result<()> {
        run_bounded(self.cmd(&["up", "-d", "--no-build"]), "compose up")?;
        Ok(())
    }

    /// Removes the containers, the network and the volumes.
    pub fn down(&self) -> anyhow::Result<()> {
        run_bounded(
            self.cmd(&["down", "-v", "--remove-orphans", "--timeout", "5"]),
            "compose down",
        )?;
        Ok(())
    }

    pub fn logs(&self, dest: &Path) -> anyhow::Result<()> {
        let out = run_bounded(self.cmd(&["logs", "--no-color", "--timestamps"]), "compose logs")?;
        std::fs::write(dest, out)?;
        Ok(())
    }

    /// The container of a service (also when it is stopped).
    pub fn container(&self, service: &str) -> anyhow::Result<String> {
        let out = run_bounded(
            docker(&[
                "ps",
                "-aq",
                "--filter",
                &format!("label=com.docker.compose.project={}", self.project),
                "--filter",
                &format!("label=com.docker.compose.service={service}"),
            ]),
            "docker ps",
        )?;
        let id = out.lines().next().unwrap_or("").trim().to_string();
        if id.is_empty() {
            bail!("no container for service {service} in project {}", self.project);
        }
        Ok(id)
    }
}

/// Facts about a container the nemesis needs.
#[derive(Clone, Debug)]
pub struct ContainerState {
    /// 0 when not running.
    pub pid: u32,
    pub ip: String,
    pub running: bool,
    pub paused: bool,
}

pub async fn inspect(id: &str) -> anyhow::Result<ContainerState> {
    let out = run_async(
        docker(&[
            "inspect",
            "-f",
            "{{.State.Pid}} {{.State.Running}} {{.State.Paused}} {{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            id,
        ]),
        format!("docker inspect {id}"),
    )
    .await?;
    let mut parts = out.split_whitespace();
    let pid = parts.next().unwrap_or("0").parse().unwrap_or(0);
    let running = parts.next() == Some("true");
    let paused = parts.next() == Some("true");
    let ip = parts.next().unwrap_or("").to_string();
    Ok(ContainerState {
        pid,
        ip,
        running,
        paused,
    })
}

/// Tears the project down when dropped: on success, error, panic, or when
/// the run is cancelled by a signal.
pub struct TeardownGuard {
    compose: Option<Compose>,
}

impl TeardownGuard {
    pub fn new(compose: Compose) -> TeardownGuard {
        TeardownGuard { compose: Some(compose) }
    }

    pub fn teardown(&mut self) {
        if let Some(c) = self.compose.take() {
            eprintln!("tearing down compose project {}", c.project);
            if let Err(e) = c.down() {
                eprintln!("teardown of {} failed: {e:#}", c.project);
            }
        }
    }
}

impl Drop for TeardownGuard {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Host ports nobody listens on now, on 127.0.0.1.
pub fn free_ports() -> anyhow::Result<[u16; 3]> {
    let listeners: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let mut ports = [0u16; 3];
    for (i, l) in listeners.iter().enumerate() {
        ports[i] = l.local_addr()?.port();
    }
    Ok(ports)
}
