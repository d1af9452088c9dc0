//! `POST /api/git/checkout`: `git clone` with a timeout that kills the whole process group,
//! URL validation, and credentials that never leave this module unredacted (reference §3.5).
//!
//! A URL like `https://user:token@host/repo.git` is only ever passed to git itself; responses,
//! error messages, contexts and logs see `https://***@host/repo.git`, and git's stderr is
//! scrubbed of the credentials before it becomes part of an error.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sandpit_protocol::container::{GitCheckoutRequest, GitCheckoutResponse};
use sandpit_protocol::time::TimeoutMs;
use sandpit_protocol::{ErrorCode, time};

use crate::agent::Agent;
use crate::error::ApiError;
use crate::exec::kill::{ClientGone, StopReason};
use crate::exec::runner::{self, Control, Leftovers, OutputSink};
use crate::exec::{StreamKind, child_env};
use crate::files;
use crate::reaper::Reaper;

/// Clone timeout when the request names none (reference §7).
pub const DEFAULT_CLONE_TIMEOUT: TimeoutMs = TimeoutMs::from_millis(600_000);

/// Timeout of the `git branch --show-current` that follows a clone.
const BRANCH_QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// How much of git's stdout/stderr is kept (the tail is what explains a failure).
const OUTPUT_KEEP_BYTES: usize = 16 * 1024;

/// Directory name used when none can be derived from the URL.
const FALLBACK_REPO_NAME: &str = "repository";

/// Transports git may use, for the clone and anything it runs (submodules). `ext::` and `fd::`
/// would run commands or use descriptors of the caller's choosing.
const ALLOWED_PROTOCOLS: &str = "http:https:git:ssh:file";

/// Clones `req.repo_url` into the target directory and reports the branch checked out; stops
/// git when `gone` fires.
pub async fn checkout(
    agent: &Agent,
    req: GitCheckoutRequest,
    gone: ClientGone,
) -> Result<GitCheckoutResponse, ApiError> {
    let url = RepoUrl::parse(&req.repo_url)?;
    if let Some(branch) = &req.branch {
        validate_branch(branch)?;
    }
    if req.depth == Some(0) {
        return Err(ApiError::validation(
            "depth",
            "depth must be a positive integer",
        ));
    }
    let session = req.session_id.as_deref();
    let base = agent.base_dir(session);
    let target = match req.target_dir.as_deref() {
        Some(dir) => files::resolve(dir, &base, "targetDir")?,
        None => agent.config.workspace.join(url.repo_name()),
    };
    let target_text = target.to_string_lossy().into_owned();
    let existed = check_target(&target, &target_text)?;
    // The one timeout rule: absent is the default, 0 is none.
    let timeout = req.timeout_ms.unwrap_or(DEFAULT_CLONE_TIMEOUT);

    let mut args: Vec<String> = [
        "-c",
        "http.lowSpeedLimit=1024",
        "-c",
        "http.lowSpeedTime=30",
        "clone",
    ]
    .map(String::from)
    .into();
    if url.kind == UrlKind::Network {
        args.push("--filter=blob:none".into());
    }
    if let Some(branch) = &req.branch {
        args.extend(["--branch".into(), branch.clone()]);
    }
    if let Some(depth) = req.depth {
        args.extend(["--depth".into(), depth.to_string()]);
    }
    args.extend(["--".into(), url.raw.clone(), target_text.clone()]);

    let env = git_env(agent);
    let cwd = if base.is_dir() {
        base
    } else {
        PathBuf::from("/")
    };
    tracing::info!(repository = %url.redacted, target = %target_text, "git clone");
    let started = Instant::now();
    let run = run_git(&args, &cwd, &env, timeout.limit(), gone, &agent.reaper)
        .await
        .map_err(|e| {
            clone_error(
                ErrorCode::GitCloneFailed,
                &url,
                &target_text,
                format!("could not start git: {e}"),
            )
        })?;
    let stderr = url.scrub(&run.stderr);
    if run.stopped.is_some() || run.exit_code != 0 {
        if !existed {
            // A killed clone leaves a partial directory behind; git removes it only when it
            // fails on its own.
            let _ = std::fs::remove_dir_all(&target);
        }
        let error = match run.stopped {
            Some(StopReason::Deadline) => clone_error(
                ErrorCode::GitCloneFailed,
                &url,
                &target_text,
                format!("git clone timed out after {}ms", timeout.millis()),
            )
            .context("timeoutMs", timeout.millis()),
            // Nobody reads this answer; the log line says why the clone ended.
            Some(StopReason::ClientGone) => clone_error(
                ErrorCode::GitCloneFailed,
                &url,
                &target_text,
                "git clone stopped: the client went away".to_owned(),
            ),
            None => clone_error(classify(&stderr), &url, &target_text, summary(&stderr))
                .context("exitCode", run.exit_code),
        };
        tracing::warn!(
            repository = %url.redacted,
            code = ?error.code(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "git clone failed"
        );
        return Err(error.context("stderr", stderr));
    }

    let branch = current_branch(&target, &env, &agent.reaper)
        .await
        .or(req.branch)
        .unwrap_or_else(|| "unknown".into());
    Ok(GitCheckoutResponse {
        success: true,
        repo_url: url.redacted,
        branch,
        target_dir: target_text,
        timestamp: time::now(),
    })
}

/// `git branch --show-current` in the fresh clone (`None` on a detached HEAD or failure).
async fn current_branch(
    target: &Path,
    env: &BTreeMap<String, String>,
    reaper: &Reaper,
) -> Option<String> {
    let args = ["branch", "--show-current"].map(String::from);
    let run = run_git(
        &args,
        target,
        env,
        Some(BRANCH_QUERY_TIMEOUT),
        ClientGone::never(),
        reaper,
    )
    .await
    .ok()?;
    let branch = run.stdout.trim();
    (run.exit_code == 0 && run.stopped.is_none() && !branch.is_empty()).then(|| branch.to_owned())
}

/// The environment git runs with: never prompt (a private repository fails instead of
/// hanging), only the allowed transports.
fn git_env(agent: &Agent) -> BTreeMap<String, String> {
    let mut env = child_env(&agent.config, None);
    env.insert("GIT_TERMINAL_PROMPT".into(), "0".into());
    env.insert("GIT_ALLOW_PROTOCOL".into(), ALLOWED_PROTOCOLS.into());
    env.remove("GIT_ASKPASS");
    env.remove("SSH_ASKPASS");
    env.entry("GIT_SSH_COMMAND".into())
        .or_insert_with(|| "ssh -o BatchMode=yes".into());
    env
}

/// Whether the target already exists (as an empty directory); a file or a non-empty directory
/// is a conflict.
fn check_target(target: &Path, shown: &str) -> Result<bool, ApiError> {
    let conflict = || {
        ApiError::new(
            ErrorCode::FileExists,
            format!("Target directory already exists and is not empty: {shown}"),
        )
        .context("targetDir", shown)
        .operation("git.clone")
    };
    match std::fs::symlink_metadata(target) {
        Err(_) => Ok(false),
        Ok(meta) if !meta.is_dir() => Err(conflict()),
        Ok(_) => match std::fs::read_dir(target).map(|mut e| e.next().is_none()) {
            Ok(true) => Ok(true),
            _ => Err(conflict()),
        },
    }
}

fn clone_error(code: ErrorCode, url: &RepoUrl, target: &str, detail: String) -> ApiError {
    ApiError::new(
        code,
        format!("Failed to clone repository '{}': {detail}", url.redacted),
    )
    .context("repository", url.redacted.clone())
    .context("targetDir", target)
    .operation("git.clone")
}

/// The lines of git's stderr that explain the failure (progress lines dropped).
fn summary(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Cloning into"))
        .collect();
    if lines.is_empty() {
        "git exited with an error".into()
    } else {
        lines.join("; ")
    }
}

/// Maps git's stderr to an error code.
pub fn classify(stderr: &str) -> ErrorCode {
    let s = stderr.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| s.contains(n));
    if s.contains("remote branch") && s.contains("not found") {
        ErrorCode::GitBranchNotFound
    } else if has(&["already exists and is not an empty directory"]) {
        ErrorCode::FileExists
    } else if has(&[
        "authentication failed",
        "could not read username",
        "could not read password",
        "permission denied (publickey",
        "the requested url returned error: 401",
        "the requested url returned error: 403",
        "http 403",
    ]) {
        ErrorCode::GitAuthFailed
    } else if has(&[
        "repository not found",
        "not found",
        "does not exist",
        "does not appear to be a git repository",
    ]) {
        ErrorCode::GitRepositoryNotFound
    } else if has(&[
        "could not resolve host",
        "connection refused",
        "timed out",
        "failed to connect",
        "couldn't connect",
        "network is unreachable",
        "no route to host",
        "connection reset",
        "early eof",
    ]) {
        ErrorCode::GitNetworkError
    } else {
        ErrorCode::GitCloneFailed
    }
}

fn validate_branch(branch: &str) -> Result<(), ApiError> {
    let bad = branch.is_empty()
        || branch.starts_with('-')
        || branch.contains("..")
        || branch
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c));
    if bad {
        return Err(ApiError::validation(
            "branch",
            format!("Invalid branch name: {branch:?}"),
        ));
    }
    Ok(())
}

/// Whether git reaches the repository over the network (partial clone is worth asking for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlKind {
    Network,
    Local,
}

/// A validated repository URL and its redacted form.
#[derive(Clone)]
pub struct RepoUrl {
    /// As given; only ever passed to git.
    raw: String,
    /// Credentials replaced by `***`.
    pub redacted: String,
    pub kind: UrlKind,
    /// The user-info part (`user:token`) and its pieces, to scrub from git's output.
    secrets: Vec<String>,
}

impl std::fmt::Debug for RepoUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoUrl")
            .field("url", &self.redacted)
            .field("kind", &self.kind)
            .finish()
    }
}

impl RepoUrl {
    /// Accepts `http(s)://`, `git://`, `ssh://`, `file://` URLs, `user@host:path` and absolute
    /// local paths; anything else is 400 INVALID_GIT_URL.
    pub fn parse(url: &str) -> Result<RepoUrl, ApiError> {
        let (redacted, secrets) = redact_url(url);
        let invalid = |why: &str| {
            ApiError::new(
                ErrorCode::InvalidGitUrl,
                format!("Invalid Git URL '{redacted}': {why}"),
            )
            .context("repository", redacted.clone())
            .context(
                "validationErrors",
                serde_json::json!([{"field": "repoUrl", "message": why, "code": "INVALID_GIT_URL"}]),
            )
            .operation("git.clone")
        };
        if url.trim().is_empty() {
            return Err(invalid("the URL is empty"));
        }
        if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(invalid("the URL contains whitespace or control characters"));
        }
        if url.starts_with('-') {
            return Err(invalid("the URL must not start with '-'"));
        }
        let kind = if let Some((scheme, rest)) = url.split_once("://") {
            let scheme = scheme.to_ascii_lowercase();
            let authority = rest.split('/').next().unwrap_or_default();
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            match scheme.as_str() {
                "file" => {
                    if !(rest.starts_with('/') || rest.starts_with("localhost/")) {
                        return Err(invalid("file:// URLs must name an absolute path"));
                    }
                    UrlKind::Local
                }
                "http" | "https" | "git" | "ssh" | "git+ssh" | "ssh+git" => {
                    if host.is_empty() || host.starts_with('-') {
                        return Err(invalid("the URL has no valid host"));
                    }
                    UrlKind::Network
                }
                _ => {
                    return Err(invalid(
                        "unsupported scheme (use https://, http://, git://, ssh://, file://, user@host:path or an absolute path)",
                    ));
                }
            }
        } else if url.starts_with('/') {
            UrlKind::Local
        } else if is_scp_like(url) {
            UrlKind::Network
        } else {
            return Err(invalid(
                "not a URL (use https://, http://, git://, ssh://, file://, user@host:path or an absolute path)",
            ));
        };
        Ok(RepoUrl {
            raw: url.to_owned(),
            redacted,
            kind,
            secrets,
        })
    }

    /// The default directory name: the last path segment without `.git`.
    pub fn repo_name(&self) -> String {
        let path = match self.redacted.split_once("://") {
            Some((_, rest)) => rest.split_once('/').map_or("", |(_, p)| p),
            None if self.kind == UrlKind::Network => {
                self.redacted.split_once(':').map_or("", |(_, p)| p)
            }
            None => &self.redacted,
        };
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let last = path
            .trim_end_matches('/')
            .rsplit(['/', ':'])
            .next()
            .unwrap_or_default();
        let name = last.strip_suffix(".git").unwrap_or(last);
        if name.is_empty() || name == "." || name == ".." {
            FALLBACK_REPO_NAME.into()
        } else {
            name.into()
        }
    }

    /// `text` with the URL's credentials, and any other `scheme://userinfo@`, redacted.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.secrets {
            out = out.replace(secret.as_str(), "***");
        }
        redact_userinfo(&out)
    }
}

/// `user@host:path` (scp-like ssh syntax), with no option-looking parts.
fn is_scp_like(url: &str) -> bool {
    let Some((user, rest)) = url.split_once('@') else {
        return false;
    };
    let Some((host, path)) = rest.split_once(':') else {
        return false;
    };
    let word = |s: &str, extra: &str| {
        !s.is_empty()
            && !s.starts_with('-')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c) || extra.contains(c))
    };
    word(user, "~") && word(host, "") && !path.is_empty() && !path.starts_with('-')
}

/// The URL with its user-info replaced, and the secret strings it contained.
fn redact_url(url: &str) -> (String, Vec<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), Vec::new());
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return (url.to_owned(), Vec::new());
    };
    let userinfo = &rest[..at];
    let mut secrets = vec![userinfo.to_owned()];
    secrets.extend(
        userinfo
            .split(':')
            .filter(|s| s.len() >= 3)
            .map(str::to_owned),
    );
    // Tools may print the credentials decoded (`p%40ss` as `p@ss`).
    let decoded: Vec<String> = secrets
        .iter()
        .map(|s| percent_decode(s))
        .filter(|d| d.len() >= 3 && !secrets.contains(d))
        .collect();
    secrets.extend(decoded);
    // Longest first, so a password inside the user-info is not left half-replaced.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    (format!("{scheme}://***@{}", &rest[at + 1..]), secrets)
}

/// `%XX` escapes decoded (invalid ones and non-UTF-8 results left as they are).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
}

/// Replaces every `scheme://userinfo@` in free text (git's messages) by `scheme://***@`.
fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// How a git command ended.
#[derive(Debug)]
struct GitRun {
    exit_code: i32,
    /// Stopped by the kill policy (timed out, or the client went away).
    stopped: Option<StopReason>,
    stdout: String,
    stderr: String,
}

/// The tail of each of git's output streams (the end is what explains a failure).
#[derive(Debug, Default)]
struct Tails {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl OutputSink for Tails {
    fn output(&mut self, kind: StreamKind, bytes: &[u8]) -> impl Future<Output = ()> + Send {
        let buf = match kind {
            StreamKind::Stdout => &mut self.stdout,
            StreamKind::Stderr => &mut self.stderr,
        };
        buf.extend_from_slice(bytes);
        if buf.len() > OUTPUT_KEEP_BYTES {
            let excess = buf.len() - OUTPUT_KEEP_BYTES;
            buf.drain(..excess);
        }
        std::future::ready(())
    }
}

/// Runs `git args` with the one runner: at the deadline (or when `gone` fires) the whole group
/// is stopped with the kill policy, and helpers that outlive git (an ssh master) are killed
/// when it exits.
async fn run_git(
    args: &[String],
    cwd: &Path,
    env: &BTreeMap<String, String>,
    timeout: Option<Duration>,
    gone: ClientGone,
    reaper: &Reaper,
) -> std::io::Result<GitRun> {
    let mut cmd = runner::command("git", cwd, env);
    cmd.args(args);
    let child = runner::spawn(cmd, false, reaper)?;
    let control = Control {
        gone,
        leftovers: Leftovers::Kill,
        ..Control::limit(timeout)
    };
    let mut tails = Tails::default();
    let outcome = child.run(control, &mut tails).await;
    Ok(GitRun {
        exit_code: outcome.exit_code.unwrap_or(-1),
        stopped: outcome.stopped,
        stdout: String::from_utf8_lossy(&tails.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&tails.stderr).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_and_rejected_urls() {
        for ok in [
            "https://github.com/o/r.git",
            "http://127.0.0.1:8080/r",
            "git://host/r.git",
            "ssh://git@host/r.git",
            "git@github.com:o/r.git",
            "file:///tmp/r",
            "/tmp/r",
        ] {
            assert!(RepoUrl::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-uhttps://x",
            "--upload-pack=touch /tmp/x",
            "ext::sh -c touch% /tmp/pwned",
            "fd::3",
            "relative/path",
            "ftp://host/r",
            "ssh://-oProxyCommand=x/r",
            "file://relative",
            "https://host/a b",
            "-x@host:r",
        ] {
            let e = RepoUrl::parse(bad).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidGitUrl, "{bad}");
        }
    }

    #[test]
    fn network_and_local_kinds() {
        assert_eq!(
            RepoUrl::parse("https://h/r").unwrap().kind,
            UrlKind::Network
        );
        assert_eq!(RepoUrl::parse("git@h:r").unwrap().kind, UrlKind::Network);
        assert_eq!(RepoUrl::parse("file:///r").unwrap().kind, UrlKind::Local);
        assert_eq!(RepoUrl::parse("/r").unwrap().kind, UrlKind::Local);
    }

    #[test]
    fn repo_names() {
        for (url, name) in [
            ("https://github.com/octocat/Hello-World.git", "Hello-World"),
            ("https://github.com/octocat/Hello-World/", "Hello-World"),
            ("git@github.com:o/repo.git", "repo"),
            ("git@github.com:repo", "repo"),
            ("file:///tmp/x/origin.git", "origin"),
            ("/srv/git/proj", "proj"),
            ("https://host", FALLBACK_REPO_NAME),
            ("https://u:p@host/a/b.git?x=1", "b"),
        ] {
            assert_eq!(RepoUrl::parse(url).unwrap().repo_name(), name, "{url}");
        }
    }

    #[test]
    fn credentials_are_redacted_everywhere() {
        let url = RepoUrl::parse("https://user:s3cr3t@example.com/o/r.git").unwrap();
        assert_eq!(url.redacted, "https://***@example.com/o/r.git");
        assert!(!format!("{url:?}").contains("s3cr3t"));
        let stderr = "fatal: unable to access 'https://user:s3cr3t@example.com/o/r.git/': \
                      s3cr3t rejected; see http://a:b@c/";
        let scrubbed = url.scrub(stderr);
        assert!(!scrubbed.contains("s3cr3t"), "{scrubbed}");
        assert!(!scrubbed.contains("a:b@"), "{scrubbed}");
        assert!(scrubbed.contains("https://***@example.com/o/r.git/"));
        let encoded = RepoUrl::parse("https://user:p%40ss%2Fw0rd@example.com/r").unwrap();
        let scrubbed = encoded.scrub("denied for p@ss/w0rd and p%40ss%2Fw0rd");
        assert!(!scrubbed.contains("w0rd"), "{scrubbed}");
        let bad = RepoUrl::parse("ftp://user:s3cr3t@host/x").unwrap_err();
        assert!(!serde_json::to_string(&*bad.0).unwrap().contains("s3cr3t"));
    }

    #[test]
    fn stderr_classification() {
        for (stderr, code) in [
            (
                "fatal: Remote branch nope not found in upstream origin",
                ErrorCode::GitBranchNotFound,
            ),
            (
                "fatal: repository 'https://h/x/' not found",
                ErrorCode::GitRepositoryNotFound,
            ),
            (
                "fatal: '/tmp/x' does not appear to be a git repository",
                ErrorCode::GitRepositoryNotFound,
            ),
            (
                "fatal: could not read Username for 'https://h': terminal prompts disabled",
                ErrorCode::GitAuthFailed,
            ),
            (
                "fatal: Authentication failed for 'https://h/'",
                ErrorCode::GitAuthFailed,
            ),
            (
                "fatal: unable to access 'https://h/': The requested URL returned error: 403",
                ErrorCode::GitAuthFailed,
            ),
            (
                "fatal: unable to access 'https://h/': Could not resolve host: h",
                ErrorCode::GitNetworkError,
            ),
            (
                "Failed to connect to 127.0.0.1 port 1: Connection refused",
                ErrorCode::GitNetworkError,
            ),
            (
                "fatal: destination path 'x' already exists and is not an empty directory.",
                ErrorCode::FileExists,
            ),
            ("fatal: something odd", ErrorCode::GitCloneFailed),
        ] {
            assert_eq!(classify(stderr), code, "{stderr}");
        }
    }

    #[test]
    fn branch_names_are_checked() {
        assert!(validate_branch("feature/x-1").is_ok());
        for bad in ["", "-b", "a..b", "a b", "a~1", "x\n"] {
            assert!(validate_branch(bad).is_err(), "{bad:?}");
        }
    }
}
