//! File watches (`/api/watch`, `/api/watch/check`) and git checkouts (`/api/git/checkout`).

use futures::StreamExt;
use sandpit_protocol::container::{
    CheckChangesRequest, CheckChangesResult, GitCheckoutRequest, GitCheckoutResponse, WatchEvent,
    WatchEventType, WatchRequest,
};

use crate::error::{ClientError, Result};
use crate::sandbox::SandboxHandle;
use crate::sse::EventStream;

/// Options of [`SandboxHandle::watch`] and [`SandboxHandle::check_changes`]; the sandbox's
/// defaults when `None` (recursive; create, modify, delete, moves; `.git`, `node_modules` and
/// `.DS_Store` excluded).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WatchOptions {
    pub recursive: Option<bool>,
    pub events: Option<Vec<WatchEventType>>,
    /// Glob patterns (relative to the watched path) to report; exclusive with `exclude`.
    pub include: Option<Vec<String>>,
    /// Glob patterns not to report.
    pub exclude: Option<Vec<String>>,
}

/// Options of [`SandboxHandle::git_checkout`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitOptions {
    pub branch: Option<String>,
    /// Shallow clone of this many commits.
    pub depth: Option<u64>,
    /// Default `/workspace/<repository name>`.
    pub target_dir: Option<String>,
    /// Clone timeout in milliseconds (the sandbox's default is 10 minutes; `0`: none).
    pub timeout_ms: Option<u64>,
}

impl SandboxHandle {
    /// Clones a repository into the sandbox. Errors: `INVALID_GIT_URL`,
    /// `GIT_REPOSITORY_NOT_FOUND`, `GIT_BRANCH_NOT_FOUND`, `GIT_AUTH_FAILED`...
    pub async fn git_checkout(
        &self,
        repo_url: &str,
        options: &GitOptions,
    ) -> Result<GitCheckoutResponse> {
        let body = GitCheckoutRequest {
            repo_url: repo_url.to_owned(),
            branch: options.branch.clone(),
            target_dir: options.target_dir.clone(),
            session_id: self.session().map(str::to_owned),
            depth: options.depth,
            timeout_ms: options
                .timeout_ms
                .map(sandpit_protocol::time::TimeoutMs::from_millis),
        };
        self.post("git/checkout", &body).await
    }

    /// Watches `path` for changes. Resolves once the watch is live; the stream starts with the
    /// `watching` event (it carries the watch id), then yields `event`s and ends with
    /// `stopped` or `error` (or an error item if the connection ends without either). Dropping
    /// the stream ends the watch.
    pub async fn watch(
        &self,
        path: &str,
        options: &WatchOptions,
    ) -> Result<EventStream<WatchEvent>> {
        let body = self.watch_request(path, options);
        let mut events: EventStream<WatchEvent> = self.post_stream("watch", &body).await?;
        let first = match events.next().await {
            Some(Ok(event @ WatchEvent::Watching { .. })) => event,
            Some(Ok(WatchEvent::Error { error })) => return Err(ClientError::Stream(error)),
            Some(Ok(other)) => {
                return Err(ClientError::Decode(format!(
                    "expected a watching event, got {other:?}"
                )));
            }
            Some(Err(e)) => return Err(e),
            None => {
                return Err(ClientError::Stream(
                    "the watch ended before it started".into(),
                ));
            }
        };
        let rest = futures::stream::unfold((events, false), |(mut events, done)| async move {
            if done {
                return None;
            }
            let item = match events.next().await {
                Some(Ok(event)) => {
                    let last =
                        matches!(event, WatchEvent::Stopped { .. } | WatchEvent::Error { .. });
                    return Some((Ok(event), (events, last)));
                }
                Some(Err(e)) => Err(e),
                None => Err(ClientError::Stream(
                    "the watch stream ended without a final event".into(),
                )),
            };
            Some((item, (events, true)))
        });
        Ok(Box::pin(futures::stream::iter([Ok(first)]).chain(rest)))
    }

    /// Whether anything under `path` changed since the version token `since` (from an earlier
    /// answer); without `since`, starts tracking and returns the first token. A `resync`
    /// status means the token can no longer be compared (see its `reason`).
    pub async fn check_changes(
        &self,
        path: &str,
        since: Option<&str>,
        options: &WatchOptions,
    ) -> Result<CheckChangesResult> {
        let body = CheckChangesRequest {
            watch: self.watch_request(path, options),
            since: since.map(str::to_owned),
        };
        self.post("watch/check", &body).await
    }

    fn watch_request(&self, path: &str, options: &WatchOptions) -> WatchRequest {
        WatchRequest {
            path: path.to_owned(),
            recursive: options.recursive,
            events: options.events.clone(),
            include: options.include.clone(),
            exclude: options.exclude.clone(),
            session_id: self.session().map(str::to_owned),
        }
    }
}
