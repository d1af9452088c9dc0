//! One egress listener for every sandbox of a [`LocalDriver`](crate::local::LocalDriver).
//!
//! A listening socket per sandbox cost the server one file descriptor per running sandbox for
//! as long as it ran (10,000 sandboxes: 10,000 descriptors of a hard `nofile` limit of 20,000).
//! Instead one socket, `<data_dir>/egress.sock`, listens; each sandbox's run dir gets a hard
//! link to it (`run/egress.sock`, `/run/sandpit/egress.sock` inside), so a `connect` from any
//! sandbox reaches the same listener. Who connected is told by the kernel, not by the sandbox:
//! `SO_PEERCRED` gives the host uid of the connecting process, and every sandbox owns a
//! distinct range of host uids ([`sandpit_isolation::ID_RANGE`] from its base). A connection
//! from a uid of no running sandbox's range (another host user) is closed unanswered.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::EgressEndpoint;

/// The running sandboxes' endpoints by the first host uid of their range.
type Routes = Arc<Mutex<BTreeMap<u32, (String, EgressEndpoint)>>>;

/// The shared listener and the routes of the sandboxes that use it.
pub(crate) struct EgressHub {
    path: PathBuf,
    routes: Routes,
    task: tokio::task::JoinHandle<()>,
}

impl EgressHub {
    /// Binds `path` (replacing a stale socket of an earlier run), mode 0666 so every sandbox
    /// uid may connect (identity comes from the peer's uid, not from reaching the file).
    pub(crate) fn bind(dir: &Path, name: &str) -> std::io::Result<EgressHub> {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        let listener = crate::local::bind_in(dir, name)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        let routes = Routes::default();
        let task = tokio::spawn(accept_loop(listener, routes.clone()));
        Ok(EgressHub { path, routes, task })
    }

    /// Routes connections from the uid range starting at `uid_base` to `endpoint` and links
    /// the listener into the sandbox's run dir as `link`.
    pub(crate) fn attach(
        &self,
        id: &str,
        uid_base: u32,
        endpoint: EgressEndpoint,
        link: &Path,
    ) -> std::io::Result<()> {
        let _ = std::fs::remove_file(link);
        std::fs::hard_link(&self.path, link)?;
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid_base, (id.to_owned(), endpoint));
        Ok(())
    }

    /// Stops routing the connections of sandbox `id` (its link goes with its run files).
    pub(crate) fn detach(&self, id: &str) {
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (owner, _)| owner != id);
    }

    /// Stops listening and removes the socket (at shutdown, when no sandbox runs).
    pub(crate) fn close(&self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for EgressHub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The sandbox whose uid range holds `uid`, and its endpoint.
fn route(routes: &Routes, uid: u32) -> Option<(String, EgressEndpoint)> {
    let routes = routes.lock().unwrap_or_else(|p| p.into_inner());
    let (base, found) = routes.range(..=uid).next_back()?;
    (uid - base < sandpit_isolation::ID_RANGE).then(|| found.clone())
}

async fn accept_loop(listener: tokio::net::UnixListener, routes: Routes) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let uid = stream.peer_cred().ok().map(|c| c.uid());
                match uid.and_then(|uid| route(&routes, uid)) {
                    Some((_, endpoint)) => endpoint.accept(Box::new(stream)),
                    None => tracing::debug!(?uid, "egress connection from no sandbox refused"),
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "egress accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_uid_range() {
        let routes = Routes::default();
        for (base, id) in [(100_000u32, "a"), (165_536, "b")] {
            routes
                .lock()
                .unwrap()
                .insert(base, (id.to_owned(), EgressEndpoint::new(|_| {})));
        }
        let owner = |uid| route(&routes, uid).map(|(id, _)| id);
        assert_eq!(owner(99_999), None, "below every range");
        assert_eq!(owner(100_000).as_deref(), Some("a"));
        assert_eq!(owner(165_535).as_deref(), Some("a"));
        assert_eq!(owner(165_536).as_deref(), Some("b"));
        assert_eq!(owner(231_071).as_deref(), Some("b"));
        assert_eq!(owner(231_072), None, "past the last range");
        assert_eq!(owner(0), None, "host root is no sandbox");
    }
}
