//! The one kill policy of commands, processes and git: at the deadline (or when the client is
//! gone) a command gets SIGTERM, then SIGKILL after [`KILL_GRACE`]; output is drained for
//! [`DRAIN_AFTER_EXIT`] after an exit. Also the signal that tells the agent its client went
//! away. Applied by [`super::runner`] to children and by `shell.rs` to session commands.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// Grace between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// How long output is still collected after the command exited while a background job keeps
/// its pipes open.
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(100);

/// Why a command is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Its time limit passed.
    Deadline,
    /// Whoever asked for it is gone (HTTP client disconnected, SSE stream dropped, WebSocket
    /// request cancelled).
    ClientGone,
}

/// Where a stop is in the kill policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing sent yet.
    Running,
    /// SIGTERM sent; SIGKILL follows at the next deadline.
    Terminating,
    /// SIGKILL sent.
    Killed,
}

/// A command's deadline and the kill phase it drives.
#[derive(Debug)]
pub struct Deadline {
    limit: Option<Duration>,
    at: Option<Instant>,
    phase: Phase,
    reason: Option<StopReason>,
}

impl Deadline {
    /// Starts counting `limit` (none: never times out; see
    /// [`TimeoutMs::limit`](sandpit_protocol::time::TimeoutMs::limit)).
    pub fn start(limit: Option<Duration>) -> Self {
        Deadline {
            limit,
            at: limit.map(|l| Instant::now() + l),
            phase: Phase::Running,
            reason: None,
        }
    }

    /// Waits for the next step of the kill policy (forever if there is none).
    pub async fn wait(&self) {
        match self.at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }

    /// Moves the policy one step on (called when [`Deadline::wait`] fired or the client went
    /// away) and returns the phase to apply now.
    pub fn advance(&mut self, reason: StopReason) -> Phase {
        self.reason.get_or_insert(reason);
        self.phase = match self.phase {
            Phase::Running => Phase::Terminating,
            Phase::Terminating | Phase::Killed => Phase::Killed,
        };
        self.at = match self.phase {
            Phase::Terminating | Phase::Killed => Some(Instant::now() + KILL_GRACE),
            Phase::Running => None,
        };
        self.phase
    }

    /// Whether the command is being stopped, and why.
    pub fn stopped(&self) -> Option<StopReason> {
        self.reason
    }

    /// Whether the command was stopped because its time ran out.
    pub fn timed_out(&self) -> bool {
        self.reason == Some(StopReason::Deadline)
    }

    /// The configured limit.
    pub fn limit(&self) -> Option<Duration> {
        self.limit
    }
}

/// Held by the request that started a command; dropping it (the request's future is dropped
/// when the client disconnects) tells the command's task that nobody waits for it.
#[derive(Debug)]
pub struct ClientPresent {
    _tx: oneshot::Sender<()>,
}

/// Fires when nobody waits for the command any more: the [`ClientPresent`] of its request was
/// dropped, or the stream its output goes to was closed.
pub struct ClientGone {
    fut: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl std::fmt::Debug for ClientGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientGone")
            .field("armed", &self.fut.is_some())
            .finish()
    }
}

/// A linked pair: [`ClientGone::wait`] resolves once the [`ClientPresent`] is dropped.
pub fn client_pair() -> (ClientPresent, ClientGone) {
    let (tx, rx) = oneshot::channel::<()>();
    let gone = ClientGone::when(async move {
        let _ = rx.await;
    });
    (ClientPresent { _tx: tx }, gone)
}

impl ClientGone {
    /// A watcher that never fires (the command is not tied to a client).
    pub fn never() -> Self {
        ClientGone { fut: None }
    }

    /// Fires when `fut` completes.
    pub fn when(fut: impl Future<Output = ()> + Send + 'static) -> Self {
        ClientGone {
            fut: Some(Box::pin(fut)),
        }
    }

    /// Resolves once when the client is gone, then never again.
    pub async fn wait(&mut self) {
        match self.fut.as_mut() {
            Some(fut) => {
                fut.await;
                self.fut = None;
            }
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_terminates_then_kills() {
        let mut d = Deadline::start(Some(Duration::from_millis(1)));
        assert_eq!(d.stopped(), None);
        assert_eq!(d.advance(StopReason::Deadline), Phase::Terminating);
        assert!(d.timed_out());
        assert_eq!(d.advance(StopReason::ClientGone), Phase::Killed);
        // The first reason stays.
        assert_eq!(d.stopped(), Some(StopReason::Deadline));
    }

    #[tokio::test]
    async fn dropping_the_present_side_fires_once() {
        let (present, mut gone) = client_pair();
        drop(present);
        gone.wait().await;
        let again = tokio::time::timeout(Duration::from_millis(20), gone.wait()).await;
        assert!(again.is_err());
    }
}
