//! The `run_code` tool: code cells in persistent interpreter contexts (one Python and one
//! JavaScript/TypeScript context per caller and sandbox), with rich results turned into MCP
//! content: images as image items, HTML and text as text.

use std::collections::HashMap;
use std::sync::Mutex;

use rmcp::RoleServer;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::service::RequestContext;
use sandpit_client::protocol::ErrorCode;
use sandpit_client::protocol::container::CodeResult;
use sandpit_client::{ContextOptions, Execution, Language, RunOptions, SandboxHandle};
use serde_json::json;

use crate::error::ToolResult;
use crate::follow::follow;
use crate::output::clip;
use crate::params::{CodeLanguage, RunCodeParams};

/// The code contexts this server created, so that state persists between calls. Keyed by the
/// caller's API key too: two tenants may both have a sandbox named `demo`.
#[derive(Default)]
pub struct Contexts {
    ids: Mutex<HashMap<ContextKey, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ContextKey {
    api_key: String,
    sandbox_id: String,
    language: Language,
}

impl Contexts {
    fn get(&self, key: &ContextKey) -> Option<String> {
        self.ids.lock().ok()?.get(key).cloned()
    }

    fn set(&self, key: ContextKey, id: String) {
        if let Ok(mut ids) = self.ids.lock() {
            ids.insert(key, id);
        }
    }
}

impl CodeLanguage {
    fn language(self) -> Language {
        match self {
            CodeLanguage::Python => Language::Python,
            CodeLanguage::Javascript => Language::Javascript,
            CodeLanguage::Typescript => Language::Typescript,
        }
    }

    /// The context that runs this language: TypeScript runs (transpiled) in the JavaScript one.
    fn context_language(self) -> Language {
        match self {
            CodeLanguage::Python => Language::Python,
            CodeLanguage::Javascript | CodeLanguage::Typescript => Language::Javascript,
        }
    }
}

pub async fn run_code(
    contexts: &Contexts,
    api_key: &str,
    sandbox: &SandboxHandle,
    ctx: &RequestContext<RoleServer>,
    params: RunCodeParams,
) -> ToolResult {
    let key = ContextKey {
        api_key: api_key.to_owned(),
        sandbox_id: sandbox.id().to_owned(),
        language: params.language.context_language(),
    };
    let options = RunOptions {
        language: Some(params.language.language()),
        timeout_ms: params.timeout_ms,
    };
    let mut restarted = false;
    let events = match contexts.get(&key) {
        Some(id) => match sandbox.run_code_stream(&id, &params.code, &options).await {
            // The sandbox slept or restarted since: its interpreters (and their state) are gone.
            Err(e) if e.code() == Some(ErrorCode::ContextNotFound) => {
                restarted = true;
                None
            }
            other => Some(other?),
        },
        None => None,
    };
    let events = match events {
        Some(events) => events,
        None => {
            let created = sandbox
                .create_context(&ContextOptions::new(key.language))
                .await?;
            contexts.set(key, created.id.clone());
            sandbox
                .run_code_stream(&created.id, &params.code, &options)
                .await?
        }
    };
    let mut execution = Execution::default();
    follow(ctx, events, |event| execution.push(event)).await?;
    Ok(result(&execution, restarted))
}

fn result(execution: &Execution, restarted: bool) -> CallToolResult {
    let mut content = Vec::new();
    if restarted {
        content.push(ContentBlock::text(
            "[note: the sandbox restarted since the last run, so earlier variables and imports \
             are gone; this code ran in a fresh context]",
        ));
    }
    for (label, text) in [("stdout", &execution.stdout), ("stderr", &execution.stderr)] {
        if !text.is_empty() {
            content.push(ContentBlock::text(format!(
                "--- {label} ---\n{}",
                clip(text).text
            )));
        }
    }
    for result in &execution.results {
        content.extend(result_content(result));
    }
    let structured = json!({
        "stdout": clip(&execution.stdout).text,
        "stderr": clip(&execution.stderr).text,
        "executionCount": execution.execution_count,
        "error": execution.error.as_ref().map(|e| json!({
            "name": e.name, "message": e.message, "traceback": e.traceback,
        })),
    });
    let mut result = match &execution.error {
        // An exception in the code is the tool's error: the model must see the code failed.
        Some(error) => {
            content.push(ContentBlock::text(clip(&error.to_string()).text));
            CallToolResult::error(content)
        }
        None => {
            if content.is_empty() {
                content.push(ContentBlock::text("(no output)"));
            }
            CallToolResult::success(content)
        }
    };
    result.structured_content = Some(structured);
    result
}

/// The best representations of one rich result: images as image items (PNG, JPEG), then the
/// first textual form (HTML, SVG, Markdown, plain text, JSON, LaTeX).
fn result_content(result: &CodeResult) -> Vec<ContentBlock> {
    let mut content = Vec::new();
    for (data, mime_type) in [(&result.png, "image/png"), (&result.jpeg, "image/jpeg")] {
        if let Some(data) = data {
            content.push(ContentBlock::image(data.trim().to_owned(), mime_type));
        }
    }
    let json = result.json.as_ref().map(|value| value.to_string());
    let text = [
        &result.html,
        &result.svg,
        &result.markdown,
        &result.text,
        &json,
        &result.latex,
    ]
    .into_iter()
    .find_map(|repr| repr.as_ref());
    // A figure's text form (`<Figure size 640x480 with 1 Axes>`) says nothing the image does not.
    if let Some(text) = text
        && (content.is_empty() || result.html.is_some())
    {
        content.push(ContentBlock::text(clip(text).text));
    }
    content
}
