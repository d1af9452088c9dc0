//! API keys: the admin key, tenant keys (stored as SHA-256 digests), the bearer middleware and
//! revocation (which takes effect on the next request: the key cache forgets the key).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use sandpit_protocol::ErrorCode;
use sandpit_store::Store;
use sha2::{Digest, Sha256};

use crate::StartError;
use crate::error::ApiError;

/// Tenant that owns the admin key.
pub const DEFAULT_TENANT: &str = "default";
/// File under the data dir holding a generated admin key.
pub const ADMIN_KEY_FILE: &str = "admin.key";

/// Key id the audit log names the admin key by (it is not in the store).
pub const ADMIN_KEY_ID: &str = "admin";

/// How often the last-use time of a key is written, at most.
const TOUCH_EVERY_MS: i64 = 60_000;

/// The caller, as resolved from its bearer key (a request extension on every `/v1` route).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub name: String,
    pub admin: bool,
    /// Public id of the key used ([`ADMIN_KEY_ID`] for the admin key).
    pub key_id: String,
}

impl Tenant {
    /// The tenant whose resources a request acts on: the caller's own, or with the admin key
    /// any tenant named in `requested`.
    pub fn scope(&self, requested: Option<&str>) -> Result<String, ApiError> {
        match requested {
            None => Ok(self.name.clone()),
            Some(t) if t == self.name => Ok(self.name.clone()),
            Some(t) if self.admin => {
                validate_tenant(t)?;
                Ok(t.to_owned())
            }
            Some(t) => Err(ApiError::new(
                ErrorCode::PermissionDenied,
                "only the admin key can act on another tenant",
            )
            .context("tenant", t)),
        }
    }
}

/// A fresh random key: `sp_` + 64 hex digits.
pub fn generate_key() -> String {
    format!("sp_{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// Hex SHA-256 of a key: what the store keeps.
pub fn key_digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Equality whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The configured admin key, or the one saved in `<data_dir>/admin.key`, or a new one saved
/// there (mode 0600). Returns the key and the file it lives in.
pub fn load_or_create_admin_key(
    data_dir: &Path,
    configured: Option<&str>,
) -> Result<(String, PathBuf), StartError> {
    let file = data_dir.join(ADMIN_KEY_FILE);
    if let Some(key) = configured {
        return Ok((key.to_owned(), file));
    }
    match std::fs::read_to_string(&file) {
        Ok(key) if !key.trim().is_empty() => return Ok((key.trim().to_owned(), file)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StartError::io("reading the admin key", file)(e)),
    }
    let key = generate_key();
    let tmp = data_dir.join(format!(".{ADMIN_KEY_FILE}.tmp"));
    let write = || {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(format!("{key}\n").as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &file)
    };
    write().map_err(StartError::io("writing the admin key", &file))?;
    tracing::info!(path = %file.display(), "generated an admin key");
    Ok((key, file))
}

/// A key seen before.
#[derive(Debug, Clone)]
struct CachedKey {
    tenant: String,
    key_id: String,
    /// When its last use was last written to the store (Unix ms).
    touched_ms: i64,
}

/// Resolves bearer keys to tenants.
pub struct Auth {
    admin_digest: String,
    store: Arc<dyn Store>,
    /// Digest → key, for keys seen before; a revoked key is removed before its revocation is
    /// answered, so it never outlives it here.
    cache: RwLock<HashMap<String, CachedKey>>,
    /// Bumped by every [`Auth::forget`]: a lookup that raced a revocation is not cached.
    revocations: AtomicU64,
    /// Key ids revoked while this server runs: credentials derived from them earlier
    /// (WebSocket tickets, which live only in memory) are refused too.
    revoked: RwLock<HashSet<String>>,
}

impl Auth {
    pub fn new(admin_key: &str, store: Arc<dyn Store>) -> Self {
        Auth {
            admin_digest: key_digest(admin_key),
            store,
            cache: RwLock::new(HashMap::new()),
            revocations: AtomicU64::new(0),
            revoked: RwLock::new(HashSet::new()),
        }
    }

    /// The tenant a key belongs to, if any.
    pub async fn resolve(&self, key: &str) -> Result<Option<Tenant>, ApiError> {
        let digest = key_digest(key);
        if constant_time_eq(digest.as_bytes(), self.admin_digest.as_bytes()) {
            return Ok(Some(Tenant {
                name: DEFAULT_TENANT.into(),
                admin: true,
                key_id: ADMIN_KEY_ID.into(),
            }));
        }
        let now = crate::lifecycle::now_ms();
        let cached = self
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
            .cloned();
        let key = match cached {
            Some(key) => key,
            None => {
                let generation = self.revocations.load(Ordering::SeqCst);
                let Some(record) = self.store.api_key(&digest).await? else {
                    return Ok(None);
                };
                let key = CachedKey {
                    tenant: record.tenant,
                    key_id: record.key_id,
                    touched_ms: record.last_used_at_ms.unwrap_or(0),
                };
                let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
                // Checked under the lock `forget` takes: a key revoked while it was looked up
                // is not cached (this request, already past the lookup, still passes).
                if self.revocations.load(Ordering::SeqCst) == generation {
                    cache.insert(digest.clone(), key.clone());
                }
                key
            }
        };
        if now - key.touched_ms >= TOUCH_EVERY_MS {
            self.touch(&digest, &key.key_id, now).await;
        }
        Ok(Some(Tenant {
            name: key.tenant,
            admin: false,
            key_id: key.key_id,
        }))
    }

    /// Records a use of a key; a failure only loses the time.
    async fn touch(&self, digest: &str, key_id: &str, now: i64) {
        if let Some(k) = self
            .cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(digest)
        {
            k.touched_ms = now;
        }
        if let Err(e) = self.store.touch_api_key(key_id, now).await {
            tracing::warn!(error = %e, key_id, "recording the last use of a key");
        }
    }

    /// Forgets a revoked or rotated key: its next request is looked up (and refused).
    pub fn forget(&self, key_id: &str) {
        self.revoked
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key_id.to_owned());
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        self.revocations.fetch_add(1, Ordering::SeqCst);
        cache.retain(|_, k| k.key_id != key_id);
    }

    /// Whether the key was revoked since this server started.
    fn was_revoked(&self, key_id: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key_id)
    }
}

fn bearer(request: &Request) -> Option<&str> {
    let value = request
        .headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, key) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| key.trim())
        .filter(|k| !k.is_empty())
}

/// Middleware: 401 unless the request carries a valid bearer key; adds the [`Tenant`].
pub async fn require_key(
    State(auth): State<Arc<Auth>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    // Already resolved from a WebSocket ticket (see `ws_auth`); clients cannot set extensions.
    if let Some(tenant) = request.extensions().get::<Tenant>() {
        if auth.was_revoked(&tenant.key_id) {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "the API key this ticket was issued to has been revoked",
            ));
        }
        return Ok(next.run(request).await);
    }
    let Some(key) = bearer(&request) else {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "missing API key: send Authorization: Bearer <key>",
        ));
    };
    let Some(tenant) = auth.resolve(key).await? else {
        return Err(ApiError::new(ErrorCode::Unauthorized, "invalid API key"));
    };
    request.extensions_mut().insert(tenant);
    Ok(next.run(request).await)
}

/// Middleware for `/metrics` with `metrics_auth` on: 401 unless the bearer key is the admin key.
pub async fn require_admin_key(
    State(auth): State<Arc<Auth>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let admin = bearer(&request).is_some_and(|key| {
        constant_time_eq(key_digest(key).as_bytes(), auth.admin_digest.as_bytes())
    });
    if !admin {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "metrics need the admin key: send Authorization: Bearer <admin key>",
        ));
    }
    Ok(next.run(request).await)
}

/// Tenant names: 1–32 chars of `[a-z0-9-]`, no leading or trailing `-`.
pub fn validate_tenant(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(
            ApiError::validation("tenant must be 1-32 characters of [a-z0-9-]")
                .context("tenant", name),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn generated_keys_are_distinct_and_prefixed() {
        let (a, b) = (generate_key(), generate_key());
        assert_ne!(a, b);
        assert!(a.starts_with("sp_") && a.len() == 67);
    }

    #[test]
    fn admin_key_is_generated_once_with_private_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (k1, file) = load_or_create_admin_key(dir.path(), None).unwrap();
        let (k2, _) = load_or_create_admin_key(dir.path(), None).unwrap();
        assert_eq!(k1, k2);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (k3, _) = load_or_create_admin_key(dir.path(), Some("given")).unwrap();
        assert_eq!(k3, "given");
    }
}
