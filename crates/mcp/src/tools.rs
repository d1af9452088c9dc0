//! The MCP tools: each one a thin call of the sandpit client with the caller's API key, so MCP
//! sees exactly what the public API lets that key see.

use std::collections::BTreeMap;

use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, ContentBlock, Implementation, InitializeRequestParams, InitializeResult,
    ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use sandpit_client::protocol::container::{FileType, ListFilesOptions};
use sandpit_client::protocol::control::CreateSandboxRequest;
use sandpit_client::{ExposeOptions, ProcessOptions};
use serde_json::json;

use crate::SandpitMcp;
use crate::code::run_code;
use crate::edit::replace_exact;
use crate::error::{ToolError, ToolResult, finish};
use crate::exec::exec;
use crate::output::clip;
use crate::params::*;

/// What the server tells a model about itself when a client connects.
const INSTRUCTIONS: &str = "\
sandpit runs code in isolated Linux sandboxes. Create one with create_sandbox (or reuse one from \
list_sandboxes), then run shell commands with exec, code with run_code (Python, JavaScript or \
TypeScript, state kept between calls), and work on files with read_file, write_file, edit_file \
and list_files. Start servers with start_process, read their output with process_logs and make \
a port reachable from outside with expose_port. Sandboxes sleep when idle and keep their files; \
destroy_sandbox deletes one and its files.";

fn text(text: impl Into<String>, structured: serde_json::Value) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(structured);
    result
}

fn structured(value: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

fn env_map(env: Option<BTreeMap<String, String>>) -> impl Iterator<Item = (String, String)> {
    env.unwrap_or_default().into_iter()
}

#[tool_router(vis = "pub(crate)")]
impl SandpitMcp {
    /// Create a sandbox: an isolated Linux machine with its own files, processes and network
    /// policy (outbound network is off by default). Returns its id, which every other tool
    /// takes as sandbox_id. Creating an id that exists returns that sandbox unchanged.
    #[tool(annotations(title = "Create sandbox"))]
    async fn create_sandbox(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(params): Parameters<CreateSandboxParams>,
    ) -> CallToolResult {
        finish(self.create_sandbox_impl(&ctx, params).await)
    }

    /// List your sandboxes with their state (running, sleeping...), image and last activity.
    #[tool(annotations(title = "List sandboxes", read_only_hint = true))]
    async fn list_sandboxes(&self, ctx: RequestContext<RoleServer>) -> CallToolResult {
        finish(self.list_sandboxes_impl(&ctx).await)
    }

    /// Run a shell command in a sandbox and wait for it to finish. Returns stdout, stderr and
    /// the exit code (a non-zero exit code is a result, not a tool error). Long output is
    /// clipped to its start and end, and the full output is saved to a file in the sandbox
    /// (named in the result). For servers and other long-running programs use start_process.
    #[tool(annotations(title = "Run command"))]
    async fn exec(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(params): Parameters<ExecParams>,
    ) -> CallToolResult {
        finish(self.exec_impl(&ctx, params).await)
    }

    /// Run Python, JavaScript or TypeScript code in a persistent interpreter in a sandbox,
    /// like a notebook cell: variables and imports stay for the next call. Returns printed
    /// output, the value of the last expression, and rich results: matplotlib figures and
    /// other images as images, HTML as text. An exception makes the call an error with its
    /// traceback.
    #[tool(annotations(title = "Run code"))]
    async fn run_code(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(params): Parameters<RunCodeParams>,
    ) -> CallToolResult {
        finish(self.run_code_impl(&ctx, params).await)
    }

    /// Read a file from a sandbox. Text comes back as text; images (PNG, JPEG, GIF, WebP) as
    /// images. Very long text is clipped to its start and end.
    #[tool(annotations(title = "Read file", read_only_hint = true))]
    async fn read_file(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(params): Parameters<ReadFileParams>,
    ) -> CallToolResult {
        finish(self.read_file_impl(&ctx, params).await)
    }

    /// Write a text file in a sandbox, replacing it if it exists (parent directories are
    /// created). To change part of a file, prefer edit_file.
    #[tool(annotations(title = "Write file"))]
    async fn write_file(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(params): Parameters<WriteFileParams>,
    ) -> CallToolResult {
        finish(self.write_file_impl(&ctx, params).await)
    }

    /// List a directory of a sandbox: one line per entry with its type, size and path.
    #[tool(annotations(title = "List files", read_only_hint = true))]
    async fn list_files(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(params): Parameters<ListFilesParams>,
    ) -> CallToolResult {
        finish(self.list_files_impl(&ctx, params).await)
    }

    /// Edit a text file in a sandbox by exact string replacement: old_string must occur
    /// exactly once (or set replace_all). Fails without changing the file when old_string is
    /// missing or occurs more than once.
    #[tool(annotations(title = "Edit file"))]
    async fn edit_file(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(params): Parameters<EditFileParams>,
    ) -> CallToolResult {
        finish(self.edit_file_impl(&ctx, params).await)
    }

    /// Start a command in the background in a sandbox (a web server, a watcher, a long job)
    /// and return at once with its process id. Read its output with process_logs; make its
    /// port reachable with expose_port.
    #[tool(annotations(title = "Start background process"))]
    async fn start_process(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(params): Parameters<StartProcessParams>,
    ) -> CallToolResult {
        finish(self.start_process_impl(&ctx, params).await)
    }

    /// Show a background process's status (running, completed, failed, killed), exit code
    /// and output so far (stdout and stderr).
    #[tool(annotations(title = "Process logs", read_only_hint = true))]
    async fn process_logs(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(params): Parameters<ProcessLogsParams>,
    ) -> CallToolResult {
        finish(self.process_logs_impl(&ctx, params).await)
    }

    /// Make a port of a sandbox reachable from outside at a preview URL (HTTP and WebSocket).
    /// Start the server first (start_process), listening on 0.0.0.0 or 127.0.0.1 at that port.
    /// Anyone with the URL can reach the port.
    #[tool(annotations(title = "Expose port"))]
    async fn expose_port(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(params): Parameters<ExposePortParams>,
    ) -> CallToolResult {
        finish(self.expose_port_impl(&ctx, params).await)
    }

    /// Destroy a sandbox: stop everything in it and delete its files. This cannot be undone.
    #[tool(annotations(title = "Destroy sandbox", destructive_hint = true))]
    async fn destroy_sandbox(
        &self,
        ctx: RequestContext<RoleServer>,
        Parameters(params): Parameters<SandboxParams>,
    ) -> CallToolResult {
        finish(self.destroy_sandbox_impl(&ctx, params).await)
    }
}

// The router built once per handler, not on every call.
#[tool_handler(router = self.tool_router)]
impl ServerHandler for SandpitMcp {
    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        self.open_session(&context);
        context.peer.set_peer_info(request.clone());
        self.negotiate_initialize(&request)
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("sandpit", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }
}

/// The work of each tool, returning typed errors ([`finish`] turns them into tool errors).
impl SandpitMcp {
    async fn create_sandbox_impl(
        &self,
        ctx: &RequestContext<RoleServer>,
        params: CreateSandboxParams,
    ) -> ToolResult {
        let sleep_after = params
            .sleep_after
            .map(|s| {
                s.parse()
                    .map_err(|e| ToolError::Invalid(format!("sleep_after: {e}")))
            })
            .transpose()?;
        let request = CreateSandboxRequest {
            id: params.sandbox_id,
            image: params.image,
            sleep_after,
            ..CreateSandboxRequest::default()
        };
        let info = self.client(ctx)?.create(&request).await?;
        self.remember(ctx, &info.id, true);
        Ok(text(
            format!(
                "sandbox {} is {} (image {}); pass sandbox_id \"{}\" to the other tools",
                info.id,
                info.state.as_str(),
                info.image,
                info.id
            ),
            structured(&info),
        ))
    }

    async fn list_sandboxes_impl(&self, ctx: &RequestContext<RoleServer>) -> ToolResult {
        let sandboxes = self.client(ctx)?.list_all().await?;
        let lines: Vec<String> = sandboxes
            .iter()
            .map(|s| {
                format!(
                    "{}  {}  image {}  last active {}",
                    s.id,
                    s.state.as_str(),
                    s.image,
                    s.last_active_at
                )
            })
            .collect();
        let summary = if lines.is_empty() {
            "no sandboxes (create one with create_sandbox)".to_owned()
        } else {
            lines.join("\n")
        };
        Ok(text(summary, json!({ "sandboxes": sandboxes })))
    }

    async fn exec_impl(&self, ctx: &RequestContext<RoleServer>, params: ExecParams) -> ToolResult {
        let sandbox = self.existing_sandbox(ctx, &params.sandbox_id).await?;
        exec(&sandbox, ctx, params).await
    }

    async fn run_code_impl(
        &self,
        ctx: &RequestContext<RoleServer>,
        params: RunCodeParams,
    ) -> ToolResult {
        let key = self.api_key(ctx)?;
        let sandbox = self.existing_sandbox(ctx, &params.sandbox_id).await?;
        run_code(&self.contexts, &key, &sandbox, ctx, params).await
    }

    async fn read_file_impl(
        &self,
        ctx: &RequestContext<RoleServer>,
        params: ReadFileParams,
    ) -> ToolResult {
        let sandbox = self.existing_sandbox(ctx, &params.sandbox_id).await?;
        let file = sandbox.read_file(&params.path).await?;
        let about = json!({
            "path": file.path, "size": file.size, "mimeType": file.mime_type, "isBinary": file.is_binary,
        });
        let content = if !file.is_binary {
            let clipped = clip(&file.content);
            let mut shown = clipped.text;
            if clipped.omitted > 0 {
                shown.push_str(&format!(
                    "\n[file clipped: {} bytes in the middle not shown; read parts with exec, \
                     e.g. `sed -n 100,200p {}`]",
                    clipped.omitted, params.path
                ));
            }
            ContentBlock::text(shown)
        } else if is_image(&file.mime_type) {
            ContentBlock::image(file.content, file.mime_type.clone())
        } else {
            ContentBlock::text(format!(
                "{} is a binary file ({}, {} bytes); inspect it with exec (e.g. `file`, `xxd | head`)",
                params.path, file.mime_type, file.size
            ))
        };
        let mut result = CallToolResult::success(vec![content]);
        result.structured_content = Some(about);
        Ok(result)
    }

    async fn write_file_impl(
        &self,
        ctx: &RequestContext<RoleServer>,
        params: WriteFileParams,
    ) -> ToolResult {
        let sandbox = self.existing_sandbox(ctx, &params.sandbox_id).await?;
        sandbox.write_file(&params.path, &params.content).await?;
        let bytes = params.content.len();
        Ok(text(
            format!("wrote {bytes} bytes to {}", params.path),
            json!({ "path": params.path, "bytes": bytes }),
        ))
    }

    async fn list_files_impl(
        &self,
        ctx: &RequestContext<RoleServer>,
        params: ListFilesParams,
    ) -> ToolResult {
        let sandbox = self.existing_sandbox(ctx, &params.sandbox_id).await?;
        let options = ListFilesOptions {
            recursive: Some(params.recursive),
            include_hidden: Some(params.include_hidden),
        };
        let files = sandbox.list_files(&params.path, &options).await?;
        let lines: Vec<String> = files
            .iter()
            .map(|f| match f.file_type {
                FileType::Directory => format!("dir   {}/", f.absolute_path),
                FileType::Symlink => format!("link  {}", f.absolute_path),
                FileType::File => format!("file  {}  ({} bytes)", f.absolute_path, f.size),
                FileType::Other => format!("other {}", f.absolute_path),
            })
            .collect();
        let summary = if lines.is_empty() {
            format!("{} is empty", params.path)
        } else {
            clip(&lines.join("\n")).text
        };
        Ok(text(summary, json!({ "files": files })))
    }

    async fn edit_file_impl(
        &self,
        ctx: &RequestContext<RoleServer>,
        params: EditFileParams,
    ) -> ToolResult {
        let sandbox = self.existing_sandbox(ctx, &params.sandbox_id).await?;
        let file = sandbox.read_file(&params.path).await?;
        if file.is_binary {
            return Err(ToolError::Invalid(format!(
                "{} is a binary file ({}); edit_file changes text files only",
                params.path, file.mime_type
            )));
        }
        let (content, replaced) = replace_exact(
            &file.content,
            &params.old_string,
            &params.new_string,
            params.replace_all,
        )?;
        sandbox.write_file(&params.path, &content).await?;
        Ok(text(
            format!(
                "replaced {replaced} occurrence{} in {}",
                if replaced == 1 { "" } else { "s" },
                params.path
            ),
            json!({ "path": params.path, "replacements": replaced }),
        ))
    }

    async fn start_process_impl(
        &self,
        ctx: &RequestContext<RoleServer>,
        params: StartProcessParams,
    ) -> ToolResult {
        let sandbox = self.existing_sandbox(ctx, &params.sandbox_id).await?;
        let mut options = ProcessOptions {
            process_id: params.process_id,
            cwd: params.cwd,
            ..ProcessOptions::default()
        };
        for (key, value) in env_map(params.env) {
            options = options.env(key, value);
        }
        let process = sandbox.start_process(&params.command, &options).await?;
        Ok(text(
            format!(
                "started process {} (pid {}); read its output with process_logs",
                process.id,
                process.pid.map_or_else(|| "?".into(), |p| p.to_string())
            ),
            json!({ "processId": process.id, "pid": process.pid }),
        ))
    }

    async fn process_logs_impl(
        &self,
        ctx: &RequestContext<RoleServer>,
        params: ProcessLogsParams,
    ) -> ToolResult {
        let sandbox = self.existing_sandbox(ctx, &params.sandbox_id).await?;
        let process = sandbox.process(&params.process_id).await?;
        let info = process.info().await?;
        let logs = process.logs().await?;
        let mut summary = format!(
            "process {} ({}): {}",
            info.id,
            info.command,
            info.status.as_str()
        );
        if let Some(code) = info.exit_code {
            summary.push_str(&format!(", exit code {code}"));
        }
        summary.push('\n');
        for (label, output, dropped) in [
            ("stdout", &logs.stdout, logs.stdout_dropped_bytes),
            ("stderr", &logs.stderr, logs.stderr_dropped_bytes),
        ] {
            if output.is_empty() {
                continue;
            }
            summary.push_str(&format!("--- {label} ---\n"));
            if dropped > 0 {
                summary.push_str(&format!("[the first {dropped} bytes are no longer kept]\n"));
            }
            summary.push_str(&clip(output).text);
            if !output.ends_with('\n') {
                summary.push('\n');
            }
        }
        Ok(text(
            summary,
            json!({
                "process": info,
                "stdout": clip(&logs.stdout).text,
                "stderr": clip(&logs.stderr).text,
            }),
        ))
    }

    async fn expose_port_impl(
        &self,
        ctx: &RequestContext<RoleServer>,
        params: ExposePortParams,
    ) -> ToolResult {
        let sandbox = self.existing_sandbox(ctx, &params.sandbox_id).await?;
        let options = ExposeOptions {
            name: params.name,
            token: None,
        };
        let exposed = sandbox.expose_port(params.port, &options).await?;
        Ok(text(
            format!("port {} is reachable at {}", exposed.port, exposed.url),
            structured(&exposed),
        ))
    }

    async fn destroy_sandbox_impl(
        &self,
        ctx: &RequestContext<RoleServer>,
        params: SandboxParams,
    ) -> ToolResult {
        self.remember(ctx, &params.sandbox_id, false);
        self.client(ctx)?.destroy(&params.sandbox_id).await?;
        Ok(text(
            format!("sandbox {} was destroyed", params.sandbox_id),
            json!({ "sandboxId": params.sandbox_id, "destroyed": true }),
        ))
    }
}

fn is_image(mime_type: &str) -> bool {
    matches!(
        mime_type,
        "image/png" | "image/jpeg" | "image/gif" | "image/webp"
    )
}
