//! Bucket mounts: the request checked once at the edge, and the operator's endpoint policy.
//!
//! What a tenant sends ends up on the command line of a host process (`s3fs`, see
//! `sandpit_runtime::bucket`), so every field is checked here against a narrow grammar: the
//! endpoint is re-built from its parsed scheme, host and port (no `,` can smuggle `s3fs`
//! options), the bucket, region and prefix use plain characters, and the mount path is an
//! absolute path without `.`/`..` outside the sandbox's system directories.
//!
//! The `s3fs` process connects from the host, so the endpoint is the operator's decision:
//! origins listed with `--mount-endpoint` are allowed as they are (tests list their loopback
//! server); any other endpoint must be `https` and resolve only to public addresses (none of
//! `sandpit_protocol::netrange`'s reserved ranges, none of the operator's `--egress-block`s).

use std::net::IpAddr;

use ipnet::IpNet;
use sandpit_protocol::ErrorCode;
use sandpit_protocol::control::MountBucketRequest;
use sandpit_runtime::bucket::BucketMount;

use crate::error::{ApiError, ApiResult};

/// Directories of the sandbox a bucket cannot be mounted on or under.
const RESERVED: &[&str] = &["/proc", "/sys", "/dev", "/run/sandpit"];
/// Longest mount path accepted.
const MAX_PATH: usize = 1024;
/// Longest access key id or secret accepted.
const MAX_KEY: usize = 512;

/// Default of the most bucket mounts one sandbox may have (`--max-mounts-per-sandbox`).
pub const DEFAULT_MAX_PER_SANDBOX: usize = 8;

/// Which endpoints `s3fs` may connect to (see the module docs), and how many mounts (each one
/// an `s3fs` process) one sandbox may have.
#[derive(Debug, Clone)]
pub struct MountPolicy {
    /// Normalised origins (`scheme://host:port`) allowed whatever they resolve to.
    pub allowed: Vec<String>,
    /// The operator's blocked ranges (besides the built-in reserved ones).
    pub blocked: Vec<IpNet>,
    /// Most mounts of one sandbox; a mount beyond is refused with `TOO_MANY_MOUNTS`.
    pub max_per_sandbox: usize,
}

impl Default for MountPolicy {
    fn default() -> Self {
        MountPolicy {
            allowed: Vec::new(),
            blocked: Vec::new(),
            max_per_sandbox: DEFAULT_MAX_PER_SANDBOX,
        }
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidMountConfig, message)
}

/// `scheme://host:port` of an endpoint URL (the port made explicit), or why it is not one.
pub fn origin(endpoint: &str) -> Result<(String, String, u16), String> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|_| format!("endpoint {endpoint:?} is not a URL"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => "http",
        Some("https") => "https",
        _ => return Err(format!("endpoint {endpoint:?} must be http:// or https://")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("endpoint {endpoint:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err("endpoint must not carry credentials; use `credentials`".into());
    }
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
        return Err(format!(
            "endpoint {endpoint:?} must be an origin without path or query"
        ));
    }
    let host = authority.host().to_ascii_lowercase();
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
    {
        return Err(format!(
            "endpoint host {host:?} is not a host name or address"
        ));
    }
    let port = authority
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    Ok((format!("{scheme}://{host}:{port}"), host, port))
}

impl MountPolicy {
    /// A policy allowing `origins` (each normalised by [`origin`]).
    pub fn new(origins: &[String], blocked: Vec<IpNet>) -> Result<Self, String> {
        let allowed = origins
            .iter()
            .map(|o| origin(o).map(|(o, _, _)| o))
            .collect::<Result<_, _>>()?;
        Ok(MountPolicy {
            allowed,
            blocked,
            max_per_sandbox: DEFAULT_MAX_PER_SANDBOX,
        })
    }

    /// The same policy with at most `max` mounts per sandbox.
    pub fn with_max_per_sandbox(mut self, max: usize) -> Self {
        self.max_per_sandbox = max;
        self
    }

    /// Refuses a mount of a sandbox that has `existing` mounts already at the cap
    /// (`TOO_MANY_MOUNTS`, with the cap in its context).
    pub fn check_count(&self, existing: usize) -> ApiResult<()> {
        if existing < self.max_per_sandbox {
            return Ok(());
        }
        Err(ApiError::new(
            ErrorCode::TooManyMounts,
            format!(
                "the sandbox has {existing} bucket mounts, this server's maximum is {} \
                 (unmount one first; the operator sets it with \
                 `sandpit serve --max-mounts-per-sandbox`)",
                self.max_per_sandbox
            ),
        )
        .context("mounts", existing as u64)
        .context("max", self.max_per_sandbox as u64))
    }

    /// Refuses an endpoint the operator has not allowed (`INVALID_MOUNT_CONFIG`).
    pub async fn check(&self, endpoint: &str) -> ApiResult<()> {
        let (origin, host, port) = origin(endpoint).map_err(invalid)?;
        if self.allowed.contains(&origin) {
            return Ok(());
        }
        let refuse = |why: String| {
            invalid(format!(
                "endpoint {origin} is not allowed for bucket mounts: {why} (the operator allows \
                 endpoints with `sandpit serve --mount-endpoint`)"
            ))
            .context("endpoint", origin.as_str())
        };
        if !origin.starts_with("https://") {
            return Err(refuse("only https endpoints are allowed by default".into()));
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let addrs: Vec<IpAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| refuse(format!("cannot resolve it: {e}")))?
            .map(|a| sandpit_protocol::netrange::canonical_ip(a.ip()))
            .collect();
        if addrs.is_empty() {
            return Err(refuse("it resolves to no address".into()));
        }
        for ip in addrs {
            if let Some((_, range)) = sandpit_protocol::netrange::classify(ip) {
                return Err(refuse(format!("it resolves to {ip} ({})", range.name)));
            }
            if self.blocked.iter().any(|net| net.contains(&ip)) {
                return Err(refuse(format!(
                    "it resolves to {ip}, blocked by the operator"
                )));
            }
        }
        Ok(())
    }
}

/// The mount path normalised (`/a/b`), or why it cannot be one.
pub fn mount_path(path: &str) -> ApiResult<String> {
    let bad = |why: &str| invalid(format!("mountPath {path:?} {why}")).context("mountPath", path);
    if !path.starts_with('/') {
        return Err(bad("must be absolute"));
    }
    if path.len() > MAX_PATH || path.chars().any(char::is_control) {
        return Err(bad("must be at most 1024 printable characters"));
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(bad("must not contain . or .."));
    }
    if parts.is_empty() {
        return Err(bad("must not be /"));
    }
    let normal = format!("/{}", parts.join("/"));
    for reserved in RESERVED {
        if normal == *reserved || normal.starts_with(&format!("{reserved}/")) {
            return Err(bad(&format!("must not be in {reserved}")));
        }
    }
    Ok(normal)
}

fn check_bucket(bucket: &str) -> ApiResult<()> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-'))
        && bucket.as_bytes()[0].is_ascii_alphanumeric()
        && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "bucket {bucket:?} must be 3-63 characters of [a-z0-9.-], starting and ending with a letter or digit"
        ))
        .context("bucket", bucket))
    }
}

/// `/a/b/` from the seed's `prefix` (which must start with `/`).
fn prefix(prefix: &str) -> ApiResult<Option<String>> {
    let bad = |why: &str| invalid(format!("prefix {prefix:?} {why}")).context("prefix", prefix);
    if !prefix.starts_with('/') {
        return Err(bad("must start with /"));
    }
    let parts: Vec<&str> = prefix.split('/').filter(|p| !p.is_empty()).collect();
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(bad("must not contain . or .."));
    }
    if prefix.len() > MAX_PATH
        || prefix
            .chars()
            .any(|c| c.is_control() || matches!(c, ',' | ':' | '\\'))
    {
        return Err(bad("must be printable, without , : or \\"));
    }
    Ok((!parts.is_empty()).then(|| format!("/{}/", parts.join("/"))))
}

fn check_region(region: &str) -> ApiResult<()> {
    let ok = (1..=32).contains(&region.len())
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "region {region:?} must be 1-32 characters of [a-z0-9-]"
        )))
    }
}

/// The request checked and normalised into what the driver mounts.
pub fn validate(req: &MountBucketRequest) -> ApiResult<BucketMount> {
    check_bucket(&req.bucket)?;
    let path = mount_path(&req.mount_path)?;
    let (endpoint, _, _) = origin(&req.endpoint).map_err(invalid)?;
    let prefix = req.prefix.as_deref().map(prefix).transpose()?.flatten();
    if let Some(region) = &req.region {
        check_region(region)?;
    }
    if let Some(p) = &req.provider
        && !matches!(p.as_str(), "r2" | "s3" | "gcs")
    {
        return Err(invalid(format!("provider {p:?} must be r2, s3 or gcs")));
    }
    let Some(credentials) = &req.credentials else {
        return Err(ApiError::new(
            ErrorCode::MissingCredentials,
            "credentials {accessKeyId, secretAccessKey} are required",
        ));
    };
    for (name, value) in [
        ("accessKeyId", &credentials.access_key_id),
        ("secretAccessKey", &credentials.secret_access_key),
    ] {
        if value.is_empty() || value.len() > MAX_KEY || value.chars().any(char::is_control) {
            return Err(ApiError::new(
                ErrorCode::MissingCredentials,
                format!("credentials.{name} must be 1-{MAX_KEY} printable characters"),
            ));
        }
    }
    Ok(BucketMount {
        bucket: req.bucket.clone(),
        mount_path: path.into(),
        endpoint,
        region: req.region.clone(),
        prefix,
        read_only: req.read_only,
        access_key_id: credentials.access_key_id.clone(),
        secret_access_key: credentials.secret_access_key.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandpit_protocol::control::MountCredentials;

    fn request() -> MountBucketRequest {
        MountBucketRequest {
            bucket: "my-bucket".into(),
            mount_path: "/mnt/data/".into(),
            endpoint: "http://127.0.0.1:9000".into(),
            credentials: Some(MountCredentials {
                access_key_id: "a".into(),
                secret_access_key: "s".into(),
            }),
            prefix: Some("/p/q".into()),
            read_only: false,
            region: None,
            provider: None,
        }
    }

    #[test]
    fn valid_requests_are_normalised() {
        let m = validate(&request()).unwrap();
        assert_eq!(m.mount_path, std::path::PathBuf::from("/mnt/data"));
        assert_eq!(m.endpoint, "http://127.0.0.1:9000");
        assert_eq!(m.prefix.as_deref(), Some("/p/q/"));
    }

    type Change = fn(&mut MountBucketRequest);

    #[test]
    fn bad_fields_are_refused_with_codes() {
        let cases: Vec<(Change, ErrorCode)> = vec![
            (|r| r.bucket = "A".into(), ErrorCode::InvalidMountConfig),
            (
                |r| r.mount_path = "rel".into(),
                ErrorCode::InvalidMountConfig,
            ),
            (|r| r.mount_path = "/".into(), ErrorCode::InvalidMountConfig),
            (
                |r| r.mount_path = "/a/../b".into(),
                ErrorCode::InvalidMountConfig,
            ),
            (
                |r| r.mount_path = "/proc/x".into(),
                ErrorCode::InvalidMountConfig,
            ),
            (
                |r| r.mount_path = "/run/sandpit".into(),
                ErrorCode::InvalidMountConfig,
            ),
            (
                |r| r.endpoint = "ftp://x".into(),
                ErrorCode::InvalidMountConfig,
            ),
            (
                |r| r.endpoint = "http://h,use_cache=/:1".into(),
                ErrorCode::InvalidMountConfig,
            ),
            (
                |r| r.endpoint = "http://u:p@h".into(),
                ErrorCode::InvalidMountConfig,
            ),
            (
                |r| r.endpoint = "http://h/path".into(),
                ErrorCode::InvalidMountConfig,
            ),
            (
                |r| r.prefix = Some("p".into()),
                ErrorCode::InvalidMountConfig,
            ),
            (
                |r| r.prefix = Some("/a,b".into()),
                ErrorCode::InvalidMountConfig,
            ),
            (
                |r| r.region = Some("us east".into()),
                ErrorCode::InvalidMountConfig,
            ),
            (|r| r.credentials = None, ErrorCode::MissingCredentials),
        ];
        for (change, code) in cases {
            let mut r = request();
            change(&mut r);
            let e = validate(&r).expect_err(&format!("{r:?}"));
            assert_eq!(e.code(), code, "{r:?}");
        }
    }

    #[test]
    fn mount_count_is_capped() {
        let policy = MountPolicy::default();
        assert_eq!(policy.max_per_sandbox, DEFAULT_MAX_PER_SANDBOX);
        policy.check_count(DEFAULT_MAX_PER_SANDBOX - 1).unwrap();
        let e = policy.check_count(DEFAULT_MAX_PER_SANDBOX).unwrap_err();
        assert_eq!(e.code(), ErrorCode::TooManyMounts);
        let policy = policy.with_max_per_sandbox(1);
        policy.check_count(0).unwrap();
        assert_eq!(
            policy.check_count(1).unwrap_err().code(),
            ErrorCode::TooManyMounts
        );
    }

    #[tokio::test]
    async fn policy_allows_listed_origins_and_public_https_only() {
        let policy = MountPolicy::new(&["http://127.0.0.1:9000/".into()], vec![]).unwrap();
        policy.check("http://127.0.0.1:9000").await.unwrap();
        for refused in [
            "http://127.0.0.1:9001",
            "https://127.0.0.1:9000",
            "https://169.254.169.254",
            "https://[::1]:443",
            "http://example.com",
        ] {
            let e = policy.check(refused).await.expect_err(refused);
            assert_eq!(e.code(), ErrorCode::InvalidMountConfig, "{refused}");
        }
    }
}
