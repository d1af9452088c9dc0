//! `sandpit-s3-test-server --root DIR [--port N] [--bucket NAME]...`: a real S3-compatible
//! server on 127.0.0.1 for non-Rust tests. Prints one JSON line
//! `{"endpoint":…,"accessKey":…,"secretKey":…,"region":…}` on stdout once listening, then serves
//! until stdin closes or it is killed.

use std::io::{Read, Write};
use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(about = "A real S3-compatible server (s3s-fs) on 127.0.0.1, for tests only")]
struct Args {
    /// Directory holding the buckets (created if missing).
    #[arg(long)]
    root: PathBuf,
    /// TCP port on 127.0.0.1 (0 = ephemeral).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Buckets to create before serving.
    #[arg(long)]
    bucket: Vec<String>,
    /// Keep serving when stdin reaches EOF (default: stop, so a dying parent stops us).
    #[arg(long)]
    ignore_stdin: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server = sandpit_s3_test_server::start_on(&args.root, args.port)?;
    for b in &args.bucket {
        server.create_bucket(b)?;
    }
    let line = format!(
        "{{\"endpoint\":\"{}\",\"accessKey\":\"{}\",\"secretKey\":\"{}\",\"region\":\"{}\"}}\n",
        server.endpoint, server.access_key, server.secret_key, server.region
    );
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())?;
    out.flush()?;
    drop(out);
    if args.ignore_stdin {
        loop {
            std::thread::park();
        }
    }
    let mut sink = [0u8; 256];
    let mut stdin = std::io::stdin();
    while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
    server.stop();
    Ok(())
}
