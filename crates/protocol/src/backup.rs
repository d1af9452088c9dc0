//! Wire types of directory backups: the control plane's `/v1/.../backups` routes (issue 13)
//! and the agent's `/api/backup/*` routes they drive.

use serde::{Deserialize, Serialize};

/// Directories a backup may be taken of or restored into (the seed's rule, reference §1.6):
/// absolute, no `..`, under one of these.
pub const ALLOWED_PREFIXES: &[&str] = &["/workspace", "/home", "/tmp", "/var/tmp", "/app"];
/// Default time to live of a backup: 3 days (the seed's).
pub const DEFAULT_TTL_SECS: u64 = 3 * 24 * 3600;
/// Longest backup name.
pub const MAX_NAME_CHARS: usize = 256;

/// Checks a backup directory: absolute, normalised (no `.`/`..`/empty components), under one of
/// [`ALLOWED_PREFIXES`] (the prefix itself included). Returns the message of the refusal.
pub fn validate_dir(dir: &str) -> Result<(), String> {
    if !dir.starts_with('/') {
        return Err(format!("dir must be an absolute path, got {dir:?}"));
    }
    if dir.contains('\0') {
        return Err("dir must not contain NUL bytes".into());
    }
    let trimmed = dir.trim_end_matches('/');
    if trimmed
        .split('/')
        .skip(1)
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!(
            "dir must be a normalised path without `.` or `..`, got {dir:?}"
        ));
    }
    let allowed = ALLOWED_PREFIXES
        .iter()
        .any(|p| trimmed == *p || trimmed.starts_with(&format!("{p}/")));
    if !allowed {
        return Err(format!(
            "dir must be under one of {}, got {dir:?}",
            ALLOWED_PREFIXES.join(", ")
        ));
    }
    Ok(())
}

/// Compression of a backup archive. Only zstd is produced; the field exists for the seed's
/// shape (`{format, threads}`), whose other formats are refused with INVALID_BACKUP_CONFIG.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct BackupCompression {
    /// `zstd` (default). `gzip` and `lz4` are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// zstd level 1–19 (default 1, the fastest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<i32>,
}

/// `POST /v1/sandboxes/{id}/backups`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateBackupRequest {
    /// Absolute directory under /workspace, /home, /tmp, /var/tmp or /app.
    pub dir: String,
    /// At most 256 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Time to live: seconds or a duration string (`"2h"`); default 3 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub ttl: Option<serde_json::Value>,
    /// Gitignore-style globs, relative to `dir`, left out of the archive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<String>,
    /// Also honour the `.gitignore` files in the tree.
    #[serde(default)]
    pub gitignore: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<BackupCompression>,
}

/// A backup as the control plane reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct BackupInfo {
    pub id: String,
    pub dir: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The sandbox it was taken from.
    pub sandbox_id: String,
    /// Bytes of the compressed archive as stored.
    pub size_bytes: u64,
    /// Bytes of the uncompressed archive.
    pub raw_bytes: u64,
    /// Hex SHA-256 of the stored archive.
    pub sha256: String,
    pub created_at: String,
    pub expires_at: String,
}

/// `GET /v1/backups`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct BackupList {
    pub backups: Vec<BackupInfo>,
}

/// `POST /v1/sandboxes/{id}/restore`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreBackupRequest {
    pub backup_id: String,
    /// Where to restore (default: the backup's own `dir`); same rules as a backup's `dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

/// The answer of a restore (the seed's `RestoreBackupResult` plus counts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RestoreBackupResponse {
    pub success: bool,
    pub id: String,
    pub dir: String,
    /// Files, directories and symlinks written.
    pub entries: u64,
    /// Bytes of file content written.
    pub file_bytes: u64,
}

/// Agent: `POST /api/backup/archive` — answers a tar stream of `dir`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveRequest {
    pub dir: String,
    #[serde(default)]
    pub excludes: Vec<String>,
    #[serde(default)]
    pub gitignore: bool,
}

/// Agent: the answer of `POST /api/backup/extract?dir=` (body: a tar stream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtractResponse {
    pub success: bool,
    pub dir: String,
    pub entries: u64,
    pub file_bytes: u64,
    pub skipped: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirs() {
        for ok in [
            "/workspace",
            "/workspace/",
            "/workspace/a b/ü",
            "/tmp/x",
            "/app",
        ] {
            assert!(validate_dir(ok).is_ok(), "{ok}");
        }
        for bad in [
            "workspace",
            "/",
            "/etc",
            "/workspacex",
            "/workspace/../etc",
            "/workspace/./a",
            "/workspace//a",
            "/proc/self",
            "",
        ] {
            assert!(validate_dir(bad).is_err(), "{bad}");
        }
    }
}
