//! The container API of one sandbox (`/v1/sandboxes/{id}/api/*`): commands, sessions, files;
//! and raw file transfers of any size (`/v1/sandboxes/{id}/files/*`).

use std::pin::Pin;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::Method;
use sandpit_protocol::container::{
    EnvMap, ExecEvent, ExecuteRequest, ExecuteResponse, ExistsResponse, FileInfo, FileStreamEvent,
    FileUploadResponse, ListFilesOptions, ListFilesRequest, ListFilesResponse, MkdirRequest,
    MoveRequest, OutputEncoding, PathRequest, PingResponse, ReadFileRequest, ReadFileResponse,
    RenameRequest, SessionCreateRequest, SessionCreateResponse, SessionDeleteRequest, SessionInfo,
    SessionListResponse, SetEnvRequest, SetEnvResponse, WriteFileRequest,
};
use sandpit_protocol::time::TimeoutMs;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::{Client, check_id, percent_encode};
use crate::error::{ClientError, Result};
use crate::sse::{self, EventStream};

/// Per-command options of [`SandboxHandle::exec`] and [`SandboxHandle::exec_stream`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecOptions {
    /// Session to run in; the handle's session (if any) when absent.
    pub session_id: Option<String>,
    /// Variables for this command only; `None` values unset a variable.
    pub env: EnvMap,
    /// Working directory for this command only.
    pub cwd: Option<String>,
    /// Kill the command after this many milliseconds (exit code 124); `0`: no timeout even if
    /// the session or the sandbox has a default; absent: that default.
    pub timeout_ms: Option<u64>,
    /// Bytes the command reads on stdin (else it reads nothing).
    pub stdin: Option<Vec<u8>>,
    /// Ask for output as base64 (byte-exact; [`decode_output`] turns it back into bytes).
    pub binary_output: bool,
}

impl ExecOptions {
    pub fn session(mut self, id: impl Into<String>) -> Self {
        self.session_id = Some(id.into());
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), Some(value.into()));
        self
    }

    pub fn cwd(mut self, cwd: impl Into<String>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = Some(ms);
        self
    }

    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    pub fn binary_output(mut self) -> Self {
        self.binary_output = true;
        self
    }
}

/// The bytes of a command's output field (`stdout`/`stderr` of a result, `data` of a stream
/// event): base64-decoded when `encoding` says so, else the text's bytes.
pub fn decode_output(data: &str, encoding: Option<OutputEncoding>) -> Result<Vec<u8>> {
    match encoding {
        Some(OutputEncoding::Base64) => BASE64
            .decode(data)
            .map_err(|e| ClientError::Decode(format!("output is not valid base64: {e}"))),
        _ => Ok(data.as_bytes().to_vec()),
    }
}

/// A file being downloaded by [`SandboxHandle::read_stream_bytes`]: its metadata and its
/// decoded content in chunks.
pub struct FileDownload {
    pub mime_type: String,
    pub size: u64,
    pub is_binary: bool,
    /// Decoded chunks; ends with an error if the stream broke or ended before `complete`.
    pub chunks: EventStream<Vec<u8>>,
}

/// A raw download started by [`SandboxHandle::download`].
pub struct Download {
    /// The file's size (the answer's `Content-Length`).
    pub size: Option<u64>,
    /// The file's bytes in pieces; ends with an error if the transfer broke off early.
    pub body: Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>,
}

/// The fields of a `/api/write` body that precede the streamed content.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WriteHead<'a> {
    path: &'a str,
    encoding: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_id: Option<&'a str>,
}

/// The container API of one sandbox. Obtained from [`Client::sandbox`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct SandboxHandle {
    client: Client,
    id: String,
    session: Option<String>,
}

impl SandboxHandle {
    pub(crate) fn new(client: Client, id: String) -> Self {
        SandboxHandle {
            client,
            id,
            session: None,
        }
    }

    /// The same sandbox, with every call running in session `id` unless told otherwise.
    pub fn with_session(mut self, id: impl Into<String>) -> Self {
        self.session = Some(id.into());
        self
    }

    /// The sandbox id.
    pub fn id(&self) -> &str {
        &self.id
    }

    // -----------------------------------------------------------------------------------------
    // Commands

    /// Runs `command` with bash and returns its output once it exits. A non-zero exit code is
    /// not an error: look at [`ExecuteResponse::exit_code`].
    pub async fn exec(&self, command: &str, options: &ExecOptions) -> Result<ExecuteResponse> {
        let body = self.execute_request(command, options);
        self.post("execute", &body).await
    }

    /// Runs `command` and streams its output: `start`, then `stdout`/`stderr` lines, then
    /// `complete` with the exit code.
    pub async fn exec_stream(
        &self,
        command: &str,
        options: &ExecOptions,
    ) -> Result<EventStream<ExecEvent>> {
        let body = self.execute_request(command, options);
        self.post_stream("execute/stream", &body).await
    }

    pub(crate) fn execute_request(&self, command: &str, options: &ExecOptions) -> ExecuteRequest {
        ExecuteRequest {
            command: command.to_owned(),
            session_id: options.session_id.clone().or_else(|| self.session.clone()),
            timeout_ms: options.timeout_ms.map(TimeoutMs::from_millis),
            env: (!options.env.is_empty()).then(|| options.env.clone()),
            cwd: options.cwd.clone(),
            stdin_base64: options.stdin.as_ref().map(|b| BASE64.encode(b)),
            encoding: options.binary_output.then_some(OutputEncoding::Base64),
            ..ExecuteRequest::default()
        }
    }

    // -----------------------------------------------------------------------------------------
    // Sessions

    /// Creates a session: a shell whose cwd, variables and functions persist across commands.
    pub async fn create_session(&self, request: &SessionCreateRequest) -> Result<SessionInfo> {
        let response: SessionCreateResponse = self.post("session/create", request).await?;
        Ok(response.data)
    }

    /// Ids of the live sessions.
    pub async fn list_sessions(&self) -> Result<Vec<String>> {
        let response: SessionListResponse = self.get("session/list").await?;
        Ok(response.data)
    }

    /// Ends a session and the processes it started.
    pub async fn delete_session(&self, session_id: &str) -> Result<()> {
        let body = SessionDeleteRequest {
            session_id: Some(session_id.to_owned()),
        };
        let _: serde_json::Value = self.post("session/delete", &body).await?;
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Files

    /// Reads a file (at most 32 MiB): text as UTF-8, binary content base64-encoded.
    pub async fn read_file(&self, path: &str) -> Result<ReadFileResponse> {
        let body = ReadFileRequest {
            path: path.to_owned(),
            session_id: self.session.clone(),
            encoding: None,
        };
        self.post("read", &body).await
    }

    /// Reads a file's bytes, whatever its type.
    pub async fn read_bytes(&self, path: &str) -> Result<Vec<u8>> {
        let body = ReadFileRequest {
            path: path.to_owned(),
            encoding: Some("base64".into()),
            session_id: self.session.clone(),
        };
        let response: ReadFileResponse = self.post("read", &body).await?;
        decode_content(&response.encoding, &response.content)
    }

    /// Streams a file of any size as raw events (`metadata`, `chunk`..., `complete`).
    pub async fn read_stream(&self, path: &str) -> Result<EventStream<FileStreamEvent>> {
        let body = PathRequest {
            path: path.to_owned(),
            session_id: self.session.clone(),
        };
        self.post_stream("read/stream", &body).await
    }

    /// Streams a file of any size as decoded bytes. Fails up front if the file cannot be read.
    pub async fn read_stream_bytes(&self, path: &str) -> Result<FileDownload> {
        let mut events = self.read_stream(path).await?;
        let (mime_type, size, is_binary, encoding) = match events.next().await {
            Some(Ok(FileStreamEvent::Metadata {
                mime_type,
                size,
                is_binary,
                encoding,
            })) => (mime_type, size, is_binary, encoding),
            Some(Ok(FileStreamEvent::Error { error })) => return Err(ClientError::Stream(error)),
            Some(Ok(other)) => {
                return Err(ClientError::Decode(format!(
                    "expected metadata, got {other:?}"
                )));
            }
            Some(Err(e)) => return Err(e),
            None => {
                return Err(ClientError::Stream(
                    "file stream ended before metadata".into(),
                ));
            }
        };
        let chunks = futures::stream::unfold(
            (events, encoding, false),
            |(mut events, encoding, done)| async move {
                if done {
                    return None;
                }
                loop {
                    let item = match events.next().await {
                        Some(Ok(FileStreamEvent::Chunk { data })) => {
                            decode_content(&encoding, &data)
                        }
                        Some(Ok(FileStreamEvent::Complete { .. })) => return None,
                        Some(Ok(FileStreamEvent::Error { error })) => {
                            Err(ClientError::Stream(error))
                        }
                        Some(Ok(FileStreamEvent::Metadata { .. })) => continue,
                        Some(Err(e)) => Err(e),
                        None => Err(ClientError::Stream(
                            "file stream ended before complete".into(),
                        )),
                    };
                    let failed = item.is_err();
                    return Some((item, (events, encoding, failed)));
                }
            },
        );
        Ok(FileDownload {
            mime_type,
            size,
            is_binary,
            chunks: Box::pin(chunks),
        })
    }

    /// Writes a text file, creating missing parent directories.
    pub async fn write_file(&self, path: &str, content: &str) -> Result<()> {
        self.write(path, content.to_owned(), "utf-8").await
    }

    /// Writes arbitrary bytes (sent base64-encoded).
    pub async fn write_bytes(&self, path: &str, content: &[u8]) -> Result<()> {
        self.write_bytes_with_progress(path, Bytes::copy_from_slice(content), |_| {})
            .await
    }

    /// Like [`SandboxHandle::write_bytes`], encoding and sending the body in pieces and
    /// calling `progress` with the number of content bytes handed to the connection so far.
    pub async fn write_bytes_with_progress(
        &self,
        path: &str,
        content: Bytes,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<()> {
        // 48 KiB of content is exactly 64 KiB of base64 (a multiple of 3 needs no padding).
        const PIECE: usize = 48 * 1024;
        let head = WriteHead {
            path,
            encoding: "base64",
            session_id: self.session.as_deref(),
        };
        let mut prefix = serde_json::to_string(&head)
            .map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
        prefix.pop(); // the closing brace; the content field follows
        prefix.push_str(r#","content":""#);
        let total = content.len();
        let pieces = (0..total.div_ceil(PIECE)).map(move |i| {
            let end = total.min((i + 1) * PIECE);
            let encoded = BASE64.encode(&content[i * PIECE..end]);
            progress(end as u64);
            Ok::<_, std::io::Error>(Bytes::from(encoded))
        });
        let body = futures::stream::iter(
            std::iter::once(Ok(Bytes::from(prefix)))
                .chain(pieces)
                .chain(std::iter::once(Ok(Bytes::from_static(br#""}"#)))),
        );
        let request = self
            .client
            .request(Method::POST, &self.path("write")?)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(reqwest::Body::wrap_stream(body));
        let _: serde_json::Value = self.client.json(request).await?;
        Ok(())
    }

    async fn write(&self, path: &str, content: String, encoding: &str) -> Result<()> {
        let body = WriteFileRequest {
            path: path.to_owned(),
            content,
            encoding: Some(encoding.to_owned()),
            session_id: self.session.clone(),
        };
        let _: serde_json::Value = self.post("write", &body).await?;
        Ok(())
    }

    /// Uploads a file of any size from a stream of bytes, through the raw file route (no size
    /// cap, constant memory on every hop). The file is replaced atomically once the stream
    /// ends; if the stream fails or the connection breaks, the sandbox keeps no partial file.
    /// `progress` gets the number of bytes handed to the connection so far.
    pub async fn upload<S>(
        &self,
        path: &str,
        content: S,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<FileUploadResponse>
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let mut sent = 0u64;
        let counted = content.map(move |piece| {
            if let Ok(bytes) = &piece {
                sent += bytes.len() as u64;
                progress(sent);
            }
            piece
        });
        let request = self
            .client
            .request(Method::PUT, &self.files_path(path)?)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(counted));
        self.client.json(request).await
    }

    /// Downloads a file of any size as a stream of bytes, through the raw file route. Fails up
    /// front if the file cannot be read (`FILE_NOT_FOUND`, `IS_DIRECTORY`...).
    pub async fn download(&self, path: &str) -> Result<Download> {
        let request = self.client.request(Method::GET, &self.files_path(path)?);
        let response = self.client.send(request).await?;
        let size = response.content_length();
        let body = response
            .bytes_stream()
            .map(|piece| piece.map_err(ClientError::from));
        Ok(Download {
            size,
            body: Box::pin(body),
        })
    }

    /// Deletes a file (not a directory: `IS_DIRECTORY`).
    pub async fn delete_file(&self, path: &str) -> Result<()> {
        let body = PathRequest {
            path: path.to_owned(),
            session_id: self.session.clone(),
        };
        let _: serde_json::Value = self.post("delete", &body).await?;
        Ok(())
    }

    /// Renames a file or directory.
    pub async fn rename(&self, old_path: &str, new_path: &str) -> Result<()> {
        let body = RenameRequest {
            old_path: old_path.to_owned(),
            new_path: new_path.to_owned(),
            session_id: self.session.clone(),
        };
        let _: serde_json::Value = self.post("rename", &body).await?;
        Ok(())
    }

    /// Moves a file or directory.
    pub async fn move_file(&self, source: &str, destination: &str) -> Result<()> {
        let body = MoveRequest {
            source_path: source.to_owned(),
            destination_path: destination.to_owned(),
            session_id: self.session.clone(),
        };
        let _: serde_json::Value = self.post("move", &body).await?;
        Ok(())
    }

    /// Creates a directory (and its parents when `recursive`).
    pub async fn mkdir(&self, path: &str, recursive: bool) -> Result<()> {
        let body = MkdirRequest {
            path: path.to_owned(),
            recursive: Some(recursive),
            session_id: self.session.clone(),
        };
        let _: serde_json::Value = self.post("mkdir", &body).await?;
        Ok(())
    }

    /// Lists a directory.
    pub async fn list_files(
        &self,
        path: &str,
        options: &ListFilesOptions,
    ) -> Result<Vec<FileInfo>> {
        let body = ListFilesRequest {
            path: path.to_owned(),
            options: Some(options.clone()),
            session_id: self.session.clone(),
        };
        let response: ListFilesResponse = self.post("list-files", &body).await?;
        Ok(response.files)
    }

    /// Whether a path exists.
    pub async fn exists(&self, path: &str) -> Result<bool> {
        let body = PathRequest {
            path: path.to_owned(),
            session_id: self.session.clone(),
        };
        let response: ExistsResponse = self.post("exists", &body).await?;
        Ok(response.exists)
    }

    /// Sets (`Some`) or unsets (`None`) environment variables like the seed's `setEnvVars`: in
    /// the handle's session (default `default`) right away, and for every later session and
    /// process, also after the sandbox sleeps and wakes.
    pub async fn set_env(&self, env: EnvMap) -> Result<()> {
        check_id(&self.id)?;
        let body = SetEnvRequest {
            env,
            session_id: self.session.clone(),
        };
        let request = self
            .client
            .request(Method::POST, &format!("/v1/sandboxes/{}/env", self.id))
            .json(&body);
        let _: SetEnvResponse = self.client.json(request).await?;
        Ok(())
    }

    /// Health check of the sandbox agent (starts or wakes the sandbox).
    pub async fn ping(&self) -> Result<PingResponse> {
        self.get("ping").await
    }

    // -----------------------------------------------------------------------------------------
    // Plumbing

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// The handle's default session.
    pub(crate) fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    pub(crate) fn path(&self, endpoint: &str) -> Result<String> {
        check_id(&self.id)?;
        Ok(format!("/v1/sandboxes/{}/api/{endpoint}", self.id))
    }

    /// `/v1/sandboxes/{id}/files/<path>`, the path as one percent-encoded segment (so `/`,
    /// `.` and `..` reach the sandbox as they are instead of being resolved in the URL).
    fn files_path(&self, path: &str) -> Result<String> {
        check_id(&self.id)?;
        if path.is_empty() {
            return Err(ClientError::InvalidArgument("empty file path".into()));
        }
        // A segment that is only dots would be resolved by URL normalisation.
        let path = match path {
            "." | ".." => format!("{path}/"),
            _ => path.to_owned(),
        };
        Ok(format!(
            "/v1/sandboxes/{}/files/{}",
            self.id,
            percent_encode(&path)
        ))
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, endpoint: &str) -> Result<T> {
        let request = self.client.request(Method::GET, &self.path(endpoint)?);
        self.client.json(request).await
    }

    pub(crate) async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        endpoint: &str,
        body: &B,
    ) -> Result<T> {
        let request = self
            .client
            .request(Method::POST, &self.path(endpoint)?)
            .json(body);
        self.client.json(request).await
    }

    pub(crate) async fn post_stream<B, T>(&self, endpoint: &str, body: &B) -> Result<EventStream<T>>
    where
        B: Serialize,
        T: DeserializeOwned + Send + 'static,
    {
        let request = self
            .client
            .request(Method::POST, &self.path(endpoint)?)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(body);
        let response = self.client.send(request).await?;
        Ok(sse::decode(response.bytes_stream()))
    }
}

/// Decodes file content as the agent encoded it.
fn decode_content(encoding: &str, data: &str) -> Result<Vec<u8>> {
    match encoding {
        "base64" => BASE64
            .decode(data)
            .map_err(|e| ClientError::Decode(format!("bad base64 content: {e}"))),
        _ => Ok(data.as_bytes().to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_paths_are_one_encoded_segment() {
        let client = Client::new("http://127.0.0.1:1", "k").unwrap();
        let sandbox = client.sandbox("box");
        assert_eq!(
            sandbox.files_path("/workspace/a b/../c").unwrap(),
            "/v1/sandboxes/box/files/%2Fworkspace%2Fa%20b%2F..%2Fc"
        );
        assert_eq!(
            sandbox.files_path("..").unwrap(),
            "/v1/sandboxes/box/files/..%2F"
        );
        assert!(sandbox.files_path("").is_err());
        assert!(client.sandbox("../x").files_path("a").is_err());
    }
}
