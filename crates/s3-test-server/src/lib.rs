//! Dev-only: a real S3-compatible server for tests, hosted in-process on loopback.
//!
//! The server is [`s3s`] with the directory-backed [`s3s_fs::FileSystem`] provider (buckets are
//! sub-directories of the root, objects are files). It speaks S3 over HTTP/1.1 with SigV4
//! authentication and path-style addressing, so any real S3 client (object_store, aws-sdk,
//! boto3, s3fs-fuse) can talk to it.
//!
//! ```no_run
//! let root = tempfile::tempdir().unwrap();
//! let server = sandpit_s3_test_server::start(root.path()).unwrap();
//! server.create_bucket("backups").unwrap();
//! println!("{} {} {}", server.endpoint, server.access_key, server.secret_key);
//! // dropping `server` stops it
//! ```
//!
//! The server runs on its own thread with its own Tokio runtime, so it works from synchronous
//! tests and from any async runtime without being starved by the test's executor.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use hyper_util::rt::TokioIo;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::sync::oneshot;

mod dirs;

/// The access key every server started by [`start`] accepts.
pub const ACCESS_KEY: &str = "sandpit-test-access-key";

/// A running S3 test server. Dropping it stops the server and joins its thread.
#[derive(Debug)]
pub struct S3TestServer {
    /// `http://127.0.0.1:PORT` (path-style: buckets are the first path segment).
    pub endpoint: String,
    /// The bound address.
    pub addr: SocketAddr,
    /// SigV4 access key id.
    pub access_key: String,
    /// SigV4 secret key (random per server).
    pub secret_key: String,
    /// The region clients should sign for (the server accepts any).
    pub region: String,
    /// The data directory (bucket `b` lives at `root/b`).
    pub root: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl S3TestServer {
    /// Creates a bucket (a directory under the root). Idempotent. S3 bucket names are 3–63
    /// characters; shorter names are refused by the server with `InvalidBucketName`.
    pub fn create_bucket(&self, name: &str) -> io::Result<()> {
        std::fs::create_dir_all(self.root.join(name))
    }

    /// `curl` signing its requests for this server (SigV4), quiet, failing on HTTP errors: a
    /// plain S3 client independent of the code under test. Add the method, body and URL
    /// (`{endpoint}/{bucket}/{key}`).
    pub fn curl(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new("curl");
        // s3s wants x-amz-content-sha256; curl signs it when it is set.
        cmd.args([
            "-sS",
            "--fail",
            "-H",
            "x-amz-content-sha256: UNSIGNED-PAYLOAD",
        ])
        .arg("--aws-sigv4")
        .arg(format!("aws:amz:{}:s3", self.region))
        .arg("--user")
        .arg(format!("{}:{}", self.access_key, self.secret_key));
        cmd
    }

    /// Stops the server and waits for its thread (also done on drop).
    pub fn stop(mut self) {
        self.shutdown_now();
    }

    fn shutdown_now(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for S3TestServer {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}

/// Starts a server on `127.0.0.1` with an ephemeral port, storing data under `root` (created if
/// missing). Returns once the port is bound.
pub fn start(root: &Path) -> io::Result<S3TestServer> {
    start_on(root, 0)
}

/// Like [`start`], on a given port (0 = ephemeral).
pub fn start_on(root: &Path, port: u16) -> io::Result<S3TestServer> {
    std::fs::create_dir_all(root)?;
    let root = root.canonicalize()?;
    let listener = StdTcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let secret_key = random_secret();

    let fs = s3s_fs::FileSystem::new(&root).map_err(|e| io::Error::other(format!("{e:?}")))?;
    let service = {
        let mut b = S3ServiceBuilder::new(dirs::DirAware::new(fs, &root));
        b.set_auth(SimpleAuth::from_single(ACCESS_KEY, secret_key.clone()));
        b.build()
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("s3-test-server")
        .enable_all()
        .build()?;
    let (tx, mut rx) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("s3-test-server".into())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                loop {
                    let socket = tokio::select! {
                        _ = &mut rx => break,
                        res = listener.accept() => match res {
                            Ok((s, _)) => s,
                            Err(_) => continue,
                        },
                    };
                    let _ = socket.set_nodelay(true);
                    let svc = service.clone();
                    tokio::spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(socket), svc)
                            .await;
                    });
                }
            });
            runtime.shutdown_background();
        })?;

    Ok(S3TestServer {
        endpoint: format!("http://{addr}"),
        addr,
        access_key: ACCESS_KEY.to_string(),
        secret_key,
        region: "us-east-1".to_string(),
        root,
        shutdown: Some(tx),
        thread: Some(thread),
    })
}

fn random_secret() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::with_capacity(32);
    for i in 0..2u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        h.write_u32(std::process::id());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}
