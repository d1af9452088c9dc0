//! [`HostDriver`]: a [`Driver`] for tests that runs the real `sandpit-agent serve` as a plain
//! host process: no namespaces, no limits, no root needed. Each sandbox gets
//! `<dir>/<id>/workspace` as its working directory (commands still see the host's `/`, so tests
//! must use relative paths). Enabled by the `testing` feature.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::sync::Arc;

use sandpit_runtime::{Driver, DriverError, SandboxSpec, Started, UnixConnector};
use tokio::process::{Child, Command};

struct Agent {
    child: Child,
    ephemeral: bool,
}

/// Runs agents as host processes (see the module docs).
pub struct HostDriver {
    dir: PathBuf,
    agent_bin: PathBuf,
    agents: Mutex<HashMap<String, Agent>>,
}

fn io<'a>(id: &'a str, stage: &'static str) -> impl FnOnce(std::io::Error) -> DriverError + 'a {
    move |source| DriverError::Io {
        id: id.to_owned(),
        stage,
        source,
    }
}

impl HostDriver {
    /// Sandboxes live under `dir`; `agent_bin` is a `sandpit-agent` binary.
    pub fn new(dir: impl Into<PathBuf>, agent_bin: impl Into<PathBuf>) -> Self {
        HostDriver {
            dir: dir.into(),
            agent_bin: agent_bin.into(),
            agents: Mutex::default(),
        }
    }

    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    fn socket(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.sock"))
    }

    fn take(&self, id: &str) -> Option<Agent> {
        self.agents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
    }

    /// Kills the agent's whole process group (its commands too) and reaps it.
    async fn kill(agent: &mut Agent) {
        if let Some(pid) = agent.child.id() {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let _ = agent.child.kill().await;
    }

    async fn wait_ready(
        &self,
        id: &str,
        socket: &Path,
        child: &mut Child,
    ) -> Result<(), DriverError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if tokio::net::UnixStream::connect(socket).await.is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(DriverError::StartFailed {
                    id: id.to_owned(),
                    message: format!("agent exited: {status}"),
                });
            }
            if Instant::now() > deadline {
                return Err(DriverError::StartFailed {
                    id: id.to_owned(),
                    message: "agent did not listen within 10 s".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[async_trait::async_trait]
impl Driver for HostDriver {
    async fn start(&self, spec: &SandboxSpec) -> Result<Started, DriverError> {
        let id = spec.id.as_str();
        if let Some(mut old) = self.take(id) {
            Self::kill(&mut old).await;
        }
        let workspace = self.sandbox_dir(id).join("workspace");
        std::fs::create_dir_all(&workspace).map_err(io(id, "create the workspace"))?;
        let socket = self.socket(id);
        let mut child = Command::new(&self.agent_bin)
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--workspace")
            .arg(&workspace)
            .current_dir(&workspace)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(io(id, "spawn the agent"))?;
        if let Err(e) = self.wait_ready(id, &socket, &mut child).await {
            let _ = child.kill().await;
            return Err(e);
        }
        let pid = child.id().unwrap_or(0);
        let agent = Agent {
            child,
            ephemeral: spec.ephemeral,
        };
        self.agents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), agent);
        Ok(Started {
            agent: Arc::new(UnixConnector::new(socket)),
            pid,
        })
    }

    async fn stop(&self, id: &str) -> Result<(), DriverError> {
        if let Some(mut agent) = self.take(id) {
            Self::kill(&mut agent).await;
            if agent.ephemeral {
                let _ = std::fs::remove_dir_all(self.sandbox_dir(id));
            }
        }
        let _ = std::fs::remove_file(self.socket(id));
        Ok(())
    }

    async fn destroy(&self, id: &str) -> Result<(), DriverError> {
        self.stop(id).await?;
        match std::fs::remove_dir_all(self.sandbox_dir(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io(id, "remove the sandbox dir")(e))
            }
            _ => Ok(()),
        }
    }

    async fn is_running(&self, id: &str) -> bool {
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        agents
            .get_mut(id)
            .is_some_and(|a| matches!(a.child.try_wait(), Ok(None)))
    }

    async fn reconcile(&self) -> Result<Vec<String>, DriverError> {
        let ids: Vec<String> = self
            .agents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        for id in &ids {
            self.stop(id).await?;
        }
        Ok(ids)
    }
}
