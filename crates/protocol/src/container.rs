//! The in-sandbox agent API (`/api/*`), as specified by the Cloudflare Sandbox container
//! protocol (reference §2.3–§2.11). Field names are camelCase on the wire unless noted.
//!
//! Requests accept unknown fields (the published client may send more than we read);
//! responses carry `success` and an RFC 3339 `timestamp`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::time::TimeoutMs;

/// Environment for one command or session: `null` values mean "unset".
pub type EnvMap = BTreeMap<String, Option<String>>;

// ---------------------------------------------------------------------------------------------
// Utility

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PingResponse {
    pub success: bool,
    pub status: String,
    pub timestamp: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionResponse {
    pub success: bool,
    pub version: String,
    pub timestamp: String,
}

/// `GET /api/activity` (sandpit extension): work that goes on in the sandbox with no client
/// attached. The control plane keeps a `keepAliveWhileBusy` sandbox with any of it awake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivityResponse {
    /// Background processes running.
    pub running_processes: usize,
    /// Terminals whose shell runs a command in the foreground (not idle at its prompt).
    pub busy_terminals: usize,
}

impl ActivityResponse {
    pub fn is_busy(&self) -> bool {
        self.running_processes > 0 || self.busy_terminals > 0
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionCreateRequest {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub env: Option<EnvMap>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub command_timeout_ms: Option<TimeoutMs>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    pub id: String,
    pub cwd: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionCreateResponse {
    pub success: bool,
    pub data: SessionInfo,
    /// Always present, `null` here (the seed's placement id has no meaning for sandpit).
    pub container_placement_id: Option<String>,
    pub timestamp: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionListResponse {
    pub success: bool,
    pub data: Vec<String>,
    pub timestamp: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionDeleteRequest {
    /// Required; missing gives 400 VALIDATION_FAILED.
    #[serde(default)]
    pub session_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionDeleteResponse {
    pub success: bool,
    pub session_id: String,
    pub timestamp: String,
}

// ---------------------------------------------------------------------------------------------
// Commands

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecuteRequest {
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<bool>,
    /// Absent: the session's or agent's default; `0`: no timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<TimeoutMs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<EnvMap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// sandpit extension: text the command reads on stdin (else stdin is empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// sandpit extension: stdin as base64, for binary input (exclusive with `stdin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_base64: Option<String>,
    /// sandpit extension: stdin arrives while the command runs, as `stdin` frames of the
    /// WebSocket control transport (`/ws`) naming this request's id; `eof` ends it. Only on
    /// `/api/execute/stream` through `/ws` (exclusive with `stdin`/`stdinBase64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin_stream: Option<bool>,
    /// sandpit extension: how output is carried; `text` (default, UTF-8 with invalid bytes
    /// replaced) or `base64` (byte-exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<OutputEncoding>,
}

/// How command output is carried in JSON strings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputEncoding {
    /// UTF-8 text; bytes that are not UTF-8 become U+FFFD (the seed's shape).
    #[default]
    Text,
    /// Base64 of the raw bytes.
    Base64,
}

impl OutputEncoding {
    /// Whether this is the non-default (base64) encoding, for `skip_serializing_if`.
    pub fn is_text(encoding: &Option<OutputEncoding>) -> bool {
        matches!(encoding, None | Some(OutputEncoding::Text))
    }
}

/// sandpit extension: why a command or process ended when it did not end by itself (absent:
/// it did, or was killed by a signal someone sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExitReason {
    /// Killed by the kernel's OOM killer: the sandbox reached its memory limit (exit code 137).
    Oom,
}

impl ExitReason {
    /// The wire name (`oom`).
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Oom => "oom",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecuteResponse {
    pub success: bool,
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    pub command: String,
    /// Milliseconds the command ran.
    pub duration: u64,
    pub timestamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// sandpit extension: set when output beyond the buffer cap was dropped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// sandpit extension: set when the command was killed at its deadline (exit code 124).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    /// sandpit extension: `oom` when the OOM killer ended the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ExitReason>,
    /// sandpit extension: `base64` when stdout/stderr are base64 (requested by `encoding`).
    #[serde(default, skip_serializing_if = "OutputEncoding::is_text")]
    pub encoding: Option<OutputEncoding>,
}

/// One SSE event of `/api/execute/stream` (reference §2.5). `data:` lines carry this JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ExecEvent {
    #[serde(rename_all = "camelCase")]
    Start {
        command: String,
        timestamp: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
    },
    Stdout {
        data: String,
        timestamp: String,
        /// sandpit extension: `base64` when `data` is base64 (requested by `encoding`).
        #[serde(default, skip_serializing_if = "OutputEncoding::is_text")]
        encoding: Option<OutputEncoding>,
    },
    Stderr {
        data: String,
        timestamp: String,
        #[serde(default, skip_serializing_if = "OutputEncoding::is_text")]
        encoding: Option<OutputEncoding>,
    },
    #[serde(rename_all = "camelCase")]
    Complete {
        exit_code: i32,
        timestamp: String,
        /// sandpit extension: set when the command was killed at its deadline.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        timed_out: bool,
        /// sandpit extension: `oom` when the OOM killer ended the command.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<ExitReason>,
    },
    Error {
        error: String,
        timestamp: String,
    },
}

// ---------------------------------------------------------------------------------------------
// Files

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadFileRequest {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadFileResponse {
    pub success: bool,
    pub path: String,
    pub content: String,
    pub timestamp: String,
    /// `utf-8` or `base64`.
    pub encoding: String,
    pub is_binary: bool,
    pub mime_type: String,
    pub size: u64,
}

/// One SSE event of `/api/read/stream` (reference §2.7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum FileStreamEvent {
    #[serde(rename_all = "camelCase")]
    Metadata {
        mime_type: String,
        size: u64,
        is_binary: bool,
        encoding: String,
    },
    Chunk {
        data: String,
    },
    #[serde(rename_all = "camelCase")]
    Complete {
        bytes_read: u64,
    },
    Error {
        error: String,
    },
}

/// Largest chunk of a file stream, in bytes (reference §7).
pub const FILE_STREAM_CHUNK: usize = 65_535;

/// Largest file `/api/read` returns in one body; larger gives 413 FILE_TOO_LARGE.
pub const MAX_READ_BYTES: u64 = 32 * 1024 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteFileRequest {
    pub path: String,
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// Body of `/api/delete` and `/api/exists`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathRequest {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// Answer of `/api/write` and `/api/delete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathResponse {
    pub success: bool,
    pub path: String,
    pub timestamp: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenameRequest {
    pub old_path: String,
    pub new_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MoveRequest {
    pub source_path: String,
    pub destination_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// Answer of `/api/rename` and `/api/move`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenameResponse {
    pub success: bool,
    pub path: String,
    pub new_path: String,
    pub timestamp: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MkdirRequest {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recursive: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MkdirResponse {
    pub success: bool,
    pub path: String,
    pub recursive: bool,
    pub timestamp: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListFilesOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recursive: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_hidden: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListFilesRequest {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<ListFilesOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    File,
    Directory,
    Symlink,
    Other,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilePermissions {
    pub readable: bool,
    pub writable: bool,
    pub executable: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileInfo {
    pub name: String,
    pub absolute_path: String,
    pub relative_path: String,
    #[serde(rename = "type")]
    pub file_type: FileType,
    pub size: u64,
    pub modified_at: String,
    /// Symbolic mode, e.g. `rwxr-xr-x`.
    pub mode: String,
    pub permissions: FilePermissions,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListFilesResponse {
    pub success: bool,
    pub path: String,
    pub files: Vec<FileInfo>,
    pub count: usize,
    pub timestamp: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExistsResponse {
    pub success: bool,
    pub path: String,
    pub exists: bool,
    pub timestamp: String,
}

/// Answer of the raw upload `PUT /api/files/raw` (a sandpit extension): the path as given and
/// the number of bytes now in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct FileUploadResponse {
    pub success: bool,
    pub path: String,
    pub size: u64,
    pub timestamp: String,
}

// ---------------------------------------------------------------------------------------------
// Git (reference §2.3, §3.5)

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitCheckoutRequest {
    pub repo_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Default `/workspace/<repo name>`; relative paths resolve against the session's cwd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<u64>,
    /// Clone timeout, default 600000 ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<TimeoutMs>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitCheckoutResponse {
    pub success: bool,
    /// The URL as given, with any credentials replaced by `***`.
    pub repo_url: String,
    /// The branch checked out (`git branch --show-current`).
    pub branch: String,
    pub target_dir: String,
    pub timestamp: String,
}

// ---------------------------------------------------------------------------------------------
// File watch (reference §1.3, §2.10)

/// Kinds of file-system change a watch reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchEventType {
    Create,
    Modify,
    Delete,
    MoveFrom,
    MoveTo,
    Attrib,
}

/// Body of `POST /api/watch`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchRequest {
    pub path: String,
    /// Default `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recursive: Option<bool>,
    /// Default: create, modify, delete, move_from, move_to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<WatchEventType>>,
    /// Glob patterns; only matching paths are reported. Exclusive with `exclude`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
    /// Glob patterns; default `.git`, `node_modules`, `.DS_Store`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// One SSE event of `/api/watch`: `watching` first, then `event`s, ending with `stopped` or
/// `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum WatchEvent {
    #[serde(rename_all = "camelCase")]
    Watching {
        path: String,
        watch_id: String,
    },
    #[serde(rename_all = "camelCase")]
    Event {
        event_type: WatchEventType,
        path: String,
        is_directory: bool,
        timestamp: String,
    },
    Error {
        error: String,
    },
    Stopped {
        reason: String,
    },
}

/// Body of `POST /api/watch/check`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckChangesRequest {
    #[serde(flatten)]
    pub watch: WatchRequest,
    /// A `version` from an earlier answer (`"<watchId>:<cursor>"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeStatus {
    Unchanged,
    Changed,
    Resync,
}

/// Why a `since` token can no longer be compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResyncReason {
    /// The watch it came from is gone (idle expiry); this is a new one.
    Expired,
    /// The agent restarted since.
    Restarted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckChangesResult {
    pub success: bool,
    pub status: ChangeStatus,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ResyncReason>,
    pub timestamp: String,
}

// ---------------------------------------------------------------------------------------------
// Background processes (reference §2.3, §2.6, §3.3)

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessStartRequest {
    pub command: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_id: Option<String>,
    /// Absent or `0`: the process runs until it exits or is killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<TimeoutMs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<EnvMap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_cleanup: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// sandpit extension: keep the process's stdin open as a pipe that
    /// `POST /api/process/{id}/stdin` writes to (else stdin is `/dev/null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<bool>,
}

/// Body of `POST /api/process/{id}/stdin` (sandpit extension, like E2B's `sendStdin`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessStdinRequest {
    /// Text to write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Bytes to write, as base64 (exclusive with `data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
    /// Close stdin after writing (the process sees end of input).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub close: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessStdinResponse {
    pub success: bool,
    pub process_id: String,
    pub bytes_written: u64,
    /// Whether stdin is now closed.
    pub closed: bool,
    pub timestamp: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessStartResult {
    pub success: bool,
    pub process_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub command: String,
    pub timestamp: String,
}

/// `ProcessStatus`: derived from the exit code (0 → completed, 137/143 → killed, else failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessStatus {
    Starting,
    Running,
    Completed,
    Failed,
    Killed,
    Error,
}

impl ProcessStatus {
    /// The wire name (`running`, `completed`...).
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessStatus::Starting => "starting",
            ProcessStatus::Running => "running",
            ProcessStatus::Completed => "completed",
            ProcessStatus::Failed => "failed",
            ProcessStatus::Killed => "killed",
            ProcessStatus::Error => "error",
        }
    }

    /// True once the process has ended (for whatever reason).
    pub fn is_finished(self) -> bool {
        !matches!(self, ProcessStatus::Starting | ProcessStatus::Running)
    }
}

/// One process record. `endTime` is omitted in list answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessInfo {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub command: String,
    pub status: ProcessStatus,
    pub start_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// sandpit extension: the session the process was started from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// sandpit extension: `oom` when the OOM killer ended the process (status `killed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ExitReason>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessListResponse {
    pub success: bool,
    pub processes: Vec<ProcessInfo>,
    pub timestamp: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessGetResponse {
    pub success: bool,
    pub process: ProcessInfo,
    pub timestamp: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessLogsResponse {
    pub success: bool,
    pub process_id: String,
    pub stdout: String,
    pub stderr: String,
    pub timestamp: String,
    /// sandpit extension: stdout bytes dropped from the front of the bounded log buffer.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stdout_dropped_bytes: u64,
    /// sandpit extension: stderr bytes dropped from the front of the bounded log buffer.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stderr_dropped_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One SSE event of `GET /api/process/{id}/stream` (reference §2.6): `process_info`, then the
/// replay of buffered output, live output, and `exit` (or `error` if the exit code is unknown).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProcessStreamEvent {
    #[serde(rename_all = "camelCase")]
    ProcessInfo {
        process_id: String,
        command: String,
        status: ProcessStatus,
        timestamp: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
    },
    #[serde(rename_all = "camelCase")]
    Stdout {
        data: String,
        process_id: String,
        timestamp: String,
    },
    #[serde(rename_all = "camelCase")]
    Stderr {
        data: String,
        process_id: String,
        timestamp: String,
    },
    #[serde(rename_all = "camelCase")]
    Exit {
        process_id: String,
        exit_code: i32,
        data: String,
        timestamp: String,
        /// sandpit extension: `oom` when the OOM killer ended the process.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<ExitReason>,
    },
    #[serde(rename_all = "camelCase")]
    Error {
        process_id: String,
        data: String,
        timestamp: String,
    },
}

/// The SDK's name for process stream events.
pub type LogEvent = ProcessStreamEvent;

/// Optional body of `DELETE /api/process/{id}` (also accepted as `?signal=`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KillRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KillResponse {
    pub success: bool,
    pub process_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    pub timestamp: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KillAllResponse {
    pub success: bool,
    pub cleaned_count: usize,
    pub timestamp: String,
}

// ---------------------------------------------------------------------------------------------
// Environment (sandpit extension `POST /api/env`, the seed's `setEnvVars`)

/// Body of `POST /api/env` (and of the control plane's `POST /v1/sandboxes/{id}/env`): sets
/// (string) or unsets (`null`) variables in a session and for every later session and process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SetEnvRequest {
    #[cfg_attr(feature = "openapi", schema(value_type = std::collections::BTreeMap<String, Option<String>>))]
    pub env: EnvMap,
    /// Session to run the `export`/`unset` in; `default` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SetEnvResponse {
    pub success: bool,
    pub timestamp: String,
}

// ---------------------------------------------------------------------------------------------
// Port readiness (reference §2.8)

/// `POST /api/port-watch`. Numbers are read wide so that out-of-range values become an `error`
/// event rather than a body rejection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortWatchRequest {
    pub port: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_min: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_max: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
}

/// One SSE event of `/api/port-watch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortWatchEvent {
    #[serde(rename = "type")]
    pub kind: PortWatchEventKind,
    pub port: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortWatchEventKind {
    Watching,
    Ready,
    ProcessExited,
    Error,
}

// ---------------------------------------------------------------------------------------------
// Code interpreter (reference §1.5, §2.3, §2.9). These bodies are snake_case on the wire, as the
// published client sends and reads them.

/// `POST /api/contexts`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateContextRequest {
    /// `python` (default), `javascript` or `typescript` (aliases: python3, js, node, ts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Working directory of the context (default: the workspace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Environment of the context on top of the sandbox's (`null` unsets).
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "envVars")]
    pub env_vars: Option<EnvMap>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateContextResponse {
    pub success: bool,
    pub context_id: String,
    pub language: String,
    pub cwd: String,
    pub timestamp: String,
}

/// One entry of `GET /api/contexts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CodeContextInfo {
    pub id: String,
    pub language: String,
    pub cwd: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListContextsResponse {
    pub success: bool,
    pub contexts: Vec<CodeContextInfo>,
    pub timestamp: String,
}

/// `DELETE /api/contexts/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteContextResponse {
    pub success: bool,
    pub context_id: String,
    pub timestamp: String,
}

/// `POST /api/execute/code`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecuteCodeRequest {
    pub context_id: String,
    pub code: String,
    /// In a JavaScript context, `typescript` transpiles the code first (and vice versa).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// The run is interrupted after this long; a context that ignores the interrupt is
    /// restarted (its state is lost) and the stream says so in an `error` event. Absent: the
    /// agent's `INTERPRETER_EXECUTION_TIMEOUT_MS`; `0`: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<TimeoutMs>,
}

/// `GET /api/interpreter/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InterpreterHealthResponse {
    pub success: bool,
    /// `healthy` or `unhealthy`.
    pub status: String,
    pub timestamp: String,
}

/// One rich output of a run (a display() call, a figure, the last expression's value): every
/// representation the value has, keyed like the seed's `Result` (base64 for images).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CodeResult {
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub png: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jpeg: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svg: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub markdown: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub javascript: Option<String>,
}

/// One SSE event of `POST /api/execute/code` (reference §2.9). Streamed live: output events as
/// the code writes, then `execution_complete` or `error` last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CodeEvent {
    Stdout {
        text: String,
    },
    Stderr {
        text: String,
    },
    Result(CodeResult),
    ExecutionComplete {
        execution_count: u64,
    },
    Error {
        ename: String,
        evalue: String,
        traceback: Vec<String>,
        /// sandpit extension: set when the run was stopped at its deadline (`timeout_ms`, or
        /// the interpreter's default): that limit in milliseconds (snake case, like the rest
        /// of this stream).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timed_out_after_ms: Option<u64>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn code_events_match_the_seed_shapes() {
        let result = CodeEvent::Result(CodeResult {
            text: Some("1".into()),
            html: Some("<b>1</b>".into()),
            ..CodeResult::default()
        });
        assert_eq!(
            serde_json::to_value(&result).unwrap(),
            json!({"type": "result", "metadata": {}, "text": "1", "html": "<b>1</b>"})
        );
        let done = CodeEvent::ExecutionComplete { execution_count: 2 };
        assert_eq!(
            serde_json::to_value(&done).unwrap(),
            json!({"type": "execution_complete", "execution_count": 2})
        );
        let req: CreateContextRequest =
            serde_json::from_value(json!({"language": "python", "env_vars": {"A": "1"}})).unwrap();
        assert_eq!(req.env_vars.unwrap()["A"].as_deref(), Some("1"));
        let req: ExecuteCodeRequest =
            serde_json::from_value(json!({"context_id": "c", "code": "1", "timeout_ms": 5}))
                .unwrap();
        assert_eq!(
            (req.context_id.as_str(), req.timeout_ms),
            ("c", Some(TimeoutMs::from_millis(5)))
        );
    }

    #[test]
    fn exec_events_match_the_seed_shapes() {
        let start = ExecEvent::Start {
            command: "echo hi".into(),
            timestamp: "t".into(),
            pid: None,
        };
        assert_eq!(
            serde_json::to_value(&start).unwrap(),
            json!({"type": "start", "command": "echo hi", "timestamp": "t"})
        );
        let done = ExecEvent::Complete {
            exit_code: 3,
            timestamp: "t".into(),
            timed_out: false,
            reason: None,
        };
        assert_eq!(
            serde_json::to_value(&done).unwrap(),
            json!({"type": "complete", "exitCode": 3, "timestamp": "t"})
        );
        let oom = ExecEvent::Complete {
            exit_code: 137,
            timestamp: "t".into(),
            timed_out: false,
            reason: Some(ExitReason::Oom),
        };
        assert_eq!(
            serde_json::to_value(&oom).unwrap(),
            json!({"type": "complete", "exitCode": 137, "timestamp": "t", "reason": "oom"})
        );
    }

    #[test]
    fn execute_request_reads_what_the_sdk_sends() {
        let req: ExecuteRequest = serde_json::from_value(json!({
            "command": "echo hi", "sessionId": "sandbox-default", "timeoutMs": 5000,
            "env": {"A": "1", "B": null}, "cwd": "/tmp", "origin": "user", "extra": 1
        }))
        .unwrap();
        assert_eq!(req.session_id.as_deref(), Some("sandbox-default"));
        assert_eq!(req.timeout_ms, Some(TimeoutMs::from_millis(5000)));
        assert_eq!(req.env.unwrap().get("B"), Some(&None));
    }

    #[test]
    fn file_info_uses_type_key() {
        let info = FileInfo {
            name: "a".into(),
            absolute_path: "/a".into(),
            relative_path: "a".into(),
            file_type: FileType::Directory,
            size: 0,
            modified_at: "t".into(),
            mode: "rwxr-xr-x".into(),
            permissions: FilePermissions {
                readable: true,
                writable: true,
                executable: true,
            },
        };
        let v = serde_json::to_value(&info).unwrap();
        assert_eq!(v["type"], "directory");
        assert_eq!(v["absolutePath"], "/a");
    }
}
