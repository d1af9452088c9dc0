//! The code interpreter of one sandbox (`/api/contexts`, `/api/execute/code`): contexts are
//! long-lived Python or JavaScript/TypeScript interpreters whose state persists between runs;
//! a run streams its output live and returns rich results (MIME bundles).

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::StreamExt;
use reqwest::Method;
use sandpit_protocol::container::{
    CodeContextInfo, CodeEvent, CodeResult, CreateContextRequest, CreateContextResponse,
    DeleteContextResponse, EnvMap, ExecuteCodeRequest, InterpreterHealthResponse,
    ListContextsResponse,
};

use crate::client::percent_encode;
use crate::error::{ClientError, Result};
use crate::sandbox::SandboxHandle;
use crate::sse::EventStream;

/// The language of a code context.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Language {
    #[default]
    Python,
    Javascript,
    /// Transpiled to JavaScript and run in a JavaScript interpreter.
    Typescript,
}

impl Language {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Javascript => "javascript",
            Language::Typescript => "typescript",
        }
    }

    /// The language a file name's extension suggests (`.py`, `.js`/`.mjs`/`.cjs`, `.ts`/`.mts`).
    pub fn from_file_name(name: &str) -> Option<Language> {
        let (_, ext) = name.rsplit_once('.')?;
        match ext {
            "py" => Some(Language::Python),
            "js" | "mjs" | "cjs" => Some(Language::Javascript),
            "ts" | "mts" | "cts" => Some(Language::Typescript),
            _ => None,
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Language {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "python" | "python3" | "py" => Ok(Language::Python),
            "javascript" | "js" | "node" => Ok(Language::Javascript),
            "typescript" | "ts" => Ok(Language::Typescript),
            other => Err(ClientError::InvalidArgument(format!(
                "unknown language {other:?} (python, javascript or typescript)"
            ))),
        }
    }
}

/// Options of [`SandboxHandle::create_context`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContextOptions {
    pub language: Language,
    /// Working directory of the interpreter (the sandbox's workspace when absent).
    pub cwd: Option<String>,
    /// Variables on top of the sandbox's environment; `None` values unset a variable.
    pub env: EnvMap,
}

impl ContextOptions {
    pub fn new(language: Language) -> Self {
        ContextOptions {
            language,
            ..ContextOptions::default()
        }
    }

    pub fn cwd(mut self, cwd: impl Into<String>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), Some(value.into()));
        self
    }
}

/// Options of [`SandboxHandle::run_code`] and [`SandboxHandle::run_code_stream`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Language of this code; the context's when absent (TypeScript in a JavaScript context
    /// is transpiled first).
    pub language: Option<Language>,
    /// Interrupt the run after this long. A context that ignores the interrupt is restarted
    /// (its state is lost) and the run ends with an error saying so.
    pub timeout_ms: Option<u64>,
}

impl RunOptions {
    pub fn language(mut self, language: Language) -> Self {
        self.language = Some(language);
        self
    }

    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ms = Some(ms);
        self
    }
}

/// The exception (Python) or thrown error (JavaScript) that ended a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutionError {
    /// `ZeroDivisionError`, `TypeError`, `TimeoutError`...
    pub name: String,
    pub message: String,
    pub traceback: Vec<String>,
}

impl fmt::Display for ExecutionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

/// Everything one run produced, collected from its event stream by [`SandboxHandle::run_code`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Execution {
    /// Output written to stdout, in order.
    pub stdout: String,
    /// Output written to stderr, in order.
    pub stderr: String,
    /// Rich outputs: display() calls, figures, the value of the last expression.
    pub results: Vec<CodeResult>,
    /// Set when the code raised (the run still counts as finished).
    pub error: Option<ExecutionError>,
    /// The context's run counter after this run (absent when the run failed).
    pub execution_count: Option<u64>,
}

impl Execution {
    /// Adds one event; returns true when it was the last one (`execution_complete` or
    /// `error`).
    pub fn push(&mut self, event: CodeEvent) -> bool {
        match event {
            CodeEvent::Stdout { text } => self.stdout.push_str(&text),
            CodeEvent::Stderr { text } => self.stderr.push_str(&text),
            CodeEvent::Result(result) => self.results.push(result),
            CodeEvent::ExecutionComplete { execution_count } => {
                self.execution_count = Some(execution_count);
                return true;
            }
            CodeEvent::Error {
                ename,
                evalue,
                traceback,
                ..
            } => {
                self.error = Some(ExecutionError {
                    name: ename,
                    message: evalue,
                    traceback,
                });
                return true;
            }
        }
        false
    }

    /// The plain-text form of the last result (e.g. the value of the last expression).
    pub fn text(&self) -> Option<&str> {
        self.results.iter().rev().find_map(|r| r.text.as_deref())
    }

    /// Collects a run's events until its final one. Fails if the stream breaks or ends early.
    pub async fn collect(mut events: EventStream<CodeEvent>) -> Result<Execution> {
        let mut execution = Execution::default();
        while let Some(event) = events.next().await {
            if execution.push(event?) {
                return Ok(execution);
            }
        }
        Err(ClientError::Stream(
            "the run's stream ended before execution_complete".into(),
        ))
    }
}

/// A binary or markup representation of a result, ready to be written to a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultFile {
    /// File extension: `png`, `jpeg`, `svg` or `html`.
    pub extension: &'static str,
    pub bytes: Vec<u8>,
}

/// The representations of `result` that are files rather than terminal text: images decoded
/// from base64, SVG and HTML as they are.
pub fn result_files(result: &CodeResult) -> Result<Vec<ResultFile>> {
    let mut files = Vec::new();
    for (extension, data) in [("png", &result.png), ("jpeg", &result.jpeg)] {
        if let Some(data) = data {
            let bytes = BASE64
                .decode(data.trim())
                .map_err(|e| ClientError::Decode(format!("bad base64 {extension}: {e}")))?;
            files.push(ResultFile { extension, bytes });
        }
    }
    for (extension, data) in [("svg", &result.svg), ("html", &result.html)] {
        if let Some(data) = data {
            files.push(ResultFile {
                extension,
                bytes: data.as_bytes().to_vec(),
            });
        }
    }
    Ok(files)
}

impl SandboxHandle {
    /// Creates a code context: a fresh interpreter (taken from a warm pool when one is ready)
    /// in the given working directory and environment.
    pub async fn create_context(&self, options: &ContextOptions) -> Result<CodeContextInfo> {
        let body = CreateContextRequest {
            language: Some(options.language.as_str().to_owned()),
            cwd: options.cwd.clone(),
            env_vars: (!options.env.is_empty()).then(|| options.env.clone()),
        };
        let created: CreateContextResponse = self.post("contexts", &body).await?;
        Ok(CodeContextInfo {
            id: created.context_id,
            language: created.language,
            cwd: created.cwd,
            created_at: Some(created.timestamp),
        })
    }

    /// The sandbox's code contexts.
    pub async fn list_contexts(&self) -> Result<Vec<CodeContextInfo>> {
        let response: ListContextsResponse = self.get("contexts").await?;
        Ok(response.contexts)
    }

    /// Deletes a context and stops its interpreter (a run in progress ends with an error).
    pub async fn delete_context(&self, context_id: &str) -> Result<()> {
        let request = self
            .client()
            .request(Method::DELETE, &self.path(&context_endpoint(context_id)?)?);
        let _: DeleteContextResponse = self.client().json(request).await?;
        Ok(())
    }

    /// Runs `code` in a context and streams its events as they happen: `stdout`/`stderr`
    /// output, `result`s, then `execution_complete` (or `error`) last.
    pub async fn run_code_stream(
        &self,
        context_id: &str,
        code: &str,
        options: &RunOptions,
    ) -> Result<EventStream<CodeEvent>> {
        if context_id.is_empty() {
            return Err(ClientError::InvalidArgument("empty context id".into()));
        }
        let body = ExecuteCodeRequest {
            context_id: context_id.to_owned(),
            code: code.to_owned(),
            language: options.language.map(|l| l.as_str().to_owned()),
            timeout_ms: options
                .timeout_ms
                .map(sandpit_protocol::time::TimeoutMs::from_millis),
        };
        self.post_stream("execute/code", &body).await
    }

    /// Runs `code` in a context and returns everything it produced once it finishes. An
    /// exception in the code is not an `Err`: look at [`Execution::error`].
    pub async fn run_code(
        &self,
        context_id: &str,
        code: &str,
        options: &RunOptions,
    ) -> Result<Execution> {
        Execution::collect(self.run_code_stream(context_id, code, options).await?).await
    }

    /// Whether the interpreter service of the sandbox is up.
    pub async fn interpreter_health(&self) -> Result<InterpreterHealthResponse> {
        self.get("interpreter/health").await
    }
}

fn context_endpoint(id: &str) -> Result<String> {
    if id.is_empty() {
        return Err(ClientError::InvalidArgument("empty context id".into()));
    }
    Ok(format!("contexts/{}", percent_encode(id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_parse_and_follow_file_names() {
        assert_eq!("js".parse::<Language>().unwrap(), Language::Javascript);
        assert_eq!("python".parse::<Language>().unwrap(), Language::Python);
        assert!("ruby".parse::<Language>().is_err());
        assert_eq!(
            Language::from_file_name("a.b.ts"),
            Some(Language::Typescript)
        );
        assert_eq!(Language::from_file_name("x.py"), Some(Language::Python));
        assert_eq!(Language::from_file_name("-"), None);
        assert_eq!(Language::from_file_name("Makefile"), None);
    }

    #[test]
    fn an_execution_ends_at_complete_or_error() {
        let mut run = Execution::default();
        assert!(!run.push(CodeEvent::Stdout { text: "a".into() }));
        assert!(!run.push(CodeEvent::Stdout { text: "b\n".into() }));
        assert!(!run.push(CodeEvent::Result(CodeResult {
            text: Some("2".into()),
            ..CodeResult::default()
        })));
        assert!(run.push(CodeEvent::ExecutionComplete { execution_count: 3 }));
        assert_eq!(run.stdout, "ab\n");
        assert_eq!(run.text(), Some("2"));
        assert_eq!(run.execution_count, Some(3));
        let mut failed = Execution::default();
        assert!(failed.push(CodeEvent::Error {
            ename: "NameError".into(),
            evalue: "name 'y' is not defined".into(),
            traceback: vec!["line 1".into()],
            timed_out_after_ms: None,
        }));
        assert_eq!(
            failed.error.unwrap().to_string(),
            "NameError: name 'y' is not defined"
        );
    }

    #[test]
    fn images_are_decoded_markup_kept() {
        let result = CodeResult {
            png: Some("iVBORw0KGgo=".into()),
            html: Some("<b>x</b>".into()),
            text: Some("x".into()),
            ..CodeResult::default()
        };
        let files = result_files(&result).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].extension, "png");
        assert_eq!(files[0].bytes, b"\x89PNG\r\n\x1a\n");
        assert_eq!(files[1].bytes, b"<b>x</b>");
        let bad = CodeResult {
            jpeg: Some("***".into()),
            ..CodeResult::default()
        };
        assert!(result_files(&bad).is_err());
    }

    #[test]
    fn context_ids_are_one_path_segment() {
        assert_eq!(context_endpoint("a/b").unwrap(), "contexts/a%2Fb");
        assert!(context_endpoint("").is_err());
    }
}
