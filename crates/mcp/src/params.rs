//! The arguments of each tool. Their doc comments become the JSON Schema descriptions a model
//! reads, so they say what to pass and what happens, in the model's terms.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CreateSandboxParams {
    /// Id for the sandbox: letters, digits, '-' and '_'. Leave it out to get a generated id.
    /// If a sandbox with this id exists already, it is returned as it is.
    pub sandbox_id: Option<String>,
    /// Image to run. Leave it out for the default image: Debian with Python 3 (numpy, pandas,
    /// matplotlib), Node.js, git and common command-line tools.
    pub image: Option<String>,
    /// How long the sandbox may sit idle before it sleeps, e.g. "10m" or "1h" (its files are
    /// kept while it sleeps, and the next call wakes it). Leave it out for the server default.
    pub sleep_after: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SandboxParams {
    /// Id of the sandbox (from create_sandbox or list_sandboxes).
    pub sandbox_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ExecParams {
    /// Id of the sandbox (from create_sandbox or list_sandboxes).
    pub sandbox_id: String,
    /// Shell command for bash (pipes, redirections, `&&` work), e.g.
    /// "pip install requests && python3 main.py". Each call starts afresh in the working
    /// directory: `cd` and `export` do not carry over to the next call (use `cd dir && ...`).
    pub command: String,
    /// Working directory of the command; the sandbox's workspace when absent.
    pub cwd: Option<String>,
    /// Kill the command after this many milliseconds (it then ends with exit code 124).
    /// Leave it out for the sandbox's default.
    pub timeout_ms: Option<u64>,
    /// Extra environment variables for this command only.
    pub env: Option<BTreeMap<String, String>>,
}

/// Languages `run_code` runs.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CodeLanguage {
    Python,
    Javascript,
    Typescript,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunCodeParams {
    /// Id of the sandbox (from create_sandbox or list_sandboxes).
    pub sandbox_id: String,
    /// The code to run. Variables, imports and functions persist between calls of the same
    /// language in the same sandbox, like cells of a notebook. The value of the last
    /// expression is returned; matplotlib figures come back as images.
    pub code: String,
    /// "python", "javascript" or "typescript" (JavaScript and TypeScript share one context).
    pub language: CodeLanguage,
    /// Interrupt the run after this many milliseconds.
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ReadFileParams {
    /// Id of the sandbox (from create_sandbox or list_sandboxes).
    pub sandbox_id: String,
    /// Path of the file, absolute or relative to the sandbox's workspace.
    pub path: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct WriteFileParams {
    /// Id of the sandbox (from create_sandbox or list_sandboxes).
    pub sandbox_id: String,
    /// Path of the file, absolute or relative to the sandbox's workspace. Missing parent
    /// directories are created; an existing file is replaced.
    pub path: String,
    /// The whole new content of the file (UTF-8 text).
    pub content: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListFilesParams {
    /// Id of the sandbox (from create_sandbox or list_sandboxes).
    pub sandbox_id: String,
    /// Directory to list, absolute or relative to the sandbox's workspace.
    pub path: String,
    /// List the whole tree below the directory, not only its entries.
    #[serde(default)]
    pub recursive: bool,
    /// Include names starting with a dot.
    #[serde(default)]
    pub include_hidden: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct EditFileParams {
    /// Id of the sandbox (from create_sandbox or list_sandboxes).
    pub sandbox_id: String,
    /// Path of the text file to edit.
    pub path: String,
    /// The exact text to replace, including whitespace and indentation. It must occur exactly
    /// once in the file (add surrounding lines to make it unique) unless replace_all is true.
    pub old_string: String,
    /// The text to put in its place.
    pub new_string: String,
    /// Replace every occurrence of old_string instead of requiring exactly one.
    #[serde(default)]
    pub replace_all: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct StartProcessParams {
    /// Id of the sandbox (from create_sandbox or list_sandboxes).
    pub sandbox_id: String,
    /// Shell command to run in the background, e.g. "python3 -m http.server 8000". It keeps
    /// running after this call returns; read its output with process_logs.
    pub command: String,
    /// A name for the process, used as its id (e.g. "web"); generated when absent.
    pub process_id: Option<String>,
    /// Working directory of the process; the sandbox's workspace when absent.
    pub cwd: Option<String>,
    /// Extra environment variables for this process.
    pub env: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ProcessLogsParams {
    /// Id of the sandbox (from create_sandbox or list_sandboxes).
    pub sandbox_id: String,
    /// Id of the process, as start_process returned it.
    pub process_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ExposePortParams {
    /// Id of the sandbox (from create_sandbox or list_sandboxes).
    pub sandbox_id: String,
    /// Port a server in the sandbox listens on (1024-65535), e.g. 8000.
    pub port: u16,
    /// A label for the port, shown in listings.
    pub name: Option<String>,
}
