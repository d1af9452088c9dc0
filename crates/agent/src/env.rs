//! Setting environment variables (`POST /api/env`, a sandpit extension, the seed's
//! `setEnvVars`): sets or unsets them in a session (`export`/`unset`, so it sees them at once)
//! and in the agent's base environment (so every later session, process and sessionless
//! command sees them).

use std::sync::PoisonError;

use sandpit_protocol::container::{ExecuteRequest, SetEnvRequest, SetEnvResponse};
use sandpit_protocol::time;

use crate::agent::{Agent, DEFAULT_SESSION};
use crate::error::ApiError;
use crate::exec::{quote, validate_env};

/// Applies `req` to the agent's base environment and to its session (created if missing).
pub async fn set_env(agent: &Agent, req: SetEnvRequest) -> Result<SetEnvResponse, ApiError> {
    validate_env(&req.env)?;
    let session_id = req.session_id.unwrap_or_else(|| DEFAULT_SESSION.to_owned());
    if session_id.is_empty() {
        return Err(ApiError::validation(
            "sessionId",
            "sessionId must not be empty",
        ));
    }
    {
        let mut overrides = agent
            .config
            .env_overrides
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for (key, value) in &req.env {
            overrides.insert(key.clone(), value.clone());
        }
    }
    if !req.env.is_empty() {
        let script: Vec<String> = req
            .env
            .iter()
            .map(|(key, value)| match value {
                Some(v) => format!("export {key}={}", quote(v)),
                None => format!("unset {key}"),
            })
            .collect();
        let response = agent
            .execute(ExecuteRequest {
                command: script.join("; "),
                session_id: Some(session_id.clone()),
                ..ExecuteRequest::default()
            })
            .await?;
        if response.exit_code != 0 {
            return Err(ApiError::internal(format!(
                "setting variables in session {session_id:?} failed: {}",
                response.stderr.trim()
            )));
        }
    }
    Ok(SetEnvResponse {
        success: true,
        timestamp: time::now(),
    })
}
