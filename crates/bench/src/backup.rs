//! Backup create and restore throughput (issue 13): 1 GiB of mixed files in a sandbox, backed
//! up to the server's local object store and restored into another directory, against the
//! same-run baseline `tar | zstd -1` (and `zstd -d | tar -x`) of the same tree on the host.
//!
//! sandpit compresses with zstd's worker threads (one per CPU, at most 4), so the create row
//! has two baselines: `zstd -T1` (one thread, the classic pipe) and `zstd -T0` (zstd's own
//! workers, one per CPU) — the fair one for a multi-threaded sandpit. Both restores unpack into
//! a directory that does not exist yet (the previous round's is removed before the clock
//! starts, on both sides), so neither pays for deleting an old tree.
//!
//! The tree is made by one Python script with a fixed seed, run once inside the sandbox and
//! once on the host, so both sides archive the same bytes: 64 incompressible 4 MiB files
//! (256 MiB), 16 compressible 24 MiB text-like files (384 MiB), 8,192 small files of 4 KiB
//! (32 MiB) in 64 directories, and a 352 MiB sparse-ish file (a few written extents).

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use sandpit_client::protocol::backup::CreateBackupRequest;
use sandpit_client::protocol::control::CreateSandboxRequest;
use sandpit_client::{Client, ExecOptions};

use crate::stats::Samples;
use crate::{Row, Section};

/// Python 3: `python3 - ROOT` builds the tree under ROOT.
const MAKE_TREE: &str = r#"
import os, random, sys
root = sys.argv[1]
rnd = random.Random(13)
os.makedirs(root, exist_ok=True)
os.makedirs(f"{root}/bin", exist_ok=True)
for i in range(64):
    with open(f"{root}/bin/r{i}.bin", "wb") as f:
        f.write(rnd.randbytes(4 << 20))
words = [rnd.randbytes(rnd.randint(2, 9)).hex() for _ in range(5000)]
os.makedirs(f"{root}/text", exist_ok=True)
for i in range(16):
    with open(f"{root}/text/t{i}.txt", "w") as f:
        n = 0
        while n < (24 << 20):
            line = " ".join(rnd.choices(words, k=12)) + "\n"
            f.write(line)
            n += len(line)
for d in range(64):
    os.makedirs(f"{root}/src/d{d}", exist_ok=True)
    for i in range(128):
        with open(f"{root}/src/d{d}/f{i}.c", "wb") as f:
            f.write(rnd.randbytes(2048).hex().encode())
with open(f"{root}/disk.img", "wb") as f:
    f.truncate(352 << 20)
    for k in range(8):
        f.seek(k * (44 << 20))
        f.write(rnd.randbytes(1 << 20))
"#;

pub async fn measure(client: &Client, rounds: usize) -> anyhow::Result<Section> {
    let mut section = Section::default();
    let id = format!("bench-backup-{}", std::process::id());
    client
        .create(&CreateSandboxRequest {
            id: Some(id.clone()),
            ..Default::default()
        })
        .await?;
    let sandbox = client.sandbox(&id);
    eprintln!("backup: building the 1 GiB tree in the sandbox...");
    let script = MAKE_TREE.replace('\'', "'\"'\"'");
    let out = sandbox
        .exec(
            &format!("python3 -c '{script}' /workspace/tree && du -sb /workspace/tree | cut -f1"),
            &ExecOptions {
                timeout_ms: Some(600_000),
                ..Default::default()
            },
        )
        .await?;
    if out.exit_code != 0 {
        bail!("building the tree: {}", out.stderr);
    }
    eprintln!("backup: the same tree on the host...");
    let host = tempfile::tempdir()?;
    let tree = host.path().join("tree");
    let status = Command::new("python3")
        .args(["-c", MAKE_TREE])
        .arg(&tree)
        .status()
        .context("python3 on the host")?;
    if !status.success() {
        bail!("building the host tree failed");
    }
    let raw = dir_bytes(&tree)?;

    let (mut create, mut restore, mut base_c, mut base_cmt, mut base_r) = (
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
        Samples::default(),
    );
    let mut stored = 0;
    let load_before = load_average();
    for round in 0..rounds {
        eprintln!("backup: round {}/{rounds}...", round + 1);
        let t = Instant::now();
        let info = client
            .create_backup(
                &id,
                &CreateBackupRequest {
                    dir: "/workspace/tree".into(),
                    ..Default::default()
                },
            )
            .await?;
        create.push(t.elapsed());
        stored = info.size_bytes;
        // Like the baseline's, the restore goes into a directory that is not there yet.
        let out = sandbox
            .exec(
                "rm -rf /workspace/restored && sync",
                &ExecOptions::default(),
            )
            .await?;
        if out.exit_code != 0 {
            bail!("removing the last restore: {}", out.stderr);
        }
        let t = Instant::now();
        client
            .restore_backup(&id, &info.id, Some("/workspace/restored"))
            .await?;
        restore.push(t.elapsed());
        client.delete_backup(&info.id).await?;

        let archive = host.path().join("tree.tar.zst");
        let t = Instant::now();
        sh(&format!(
            "tar -C {} -cf - . | zstd -1 -q -T1 -o {} -f",
            tree.display(),
            archive.display()
        ))?;
        base_c.push(t.elapsed());
        let t = Instant::now();
        sh(&format!(
            "tar -C {} -cf - . | zstd -1 -q -T0 -o {} -f",
            tree.display(),
            archive.display()
        ))?;
        base_cmt.push(t.elapsed());
        let into = host.path().join("restored");
        let _ = std::fs::remove_dir_all(&into);
        sh("sync")?;
        std::fs::create_dir_all(&into)?;
        let t = Instant::now();
        sh(&format!(
            "zstd -d -q -c {} | tar -C {} -xf -",
            archive.display(),
            into.display()
        ))?;
        base_r.push(t.elapsed());
    }
    client.destroy(&id).await?;
    let load_after = load_average();

    let mbps = |d: f64| raw as f64 / 1e6 / (d / 1000.0);
    let (c, r, bc, bcmt, br) = (
        create.p50(),
        restore.p50(),
        base_c.p50(),
        base_cmt.p50(),
        base_r.p50(),
    );
    section.notes.push(format!(
        "Backup rows: a {:.2} GiB tree of mixed files (incompressible, text, 8,192 small files, a \
         sparse-ish image) backed up from a sandbox to the local object store (zstd level 1 on \
         {} worker threads, stored {:.0} MiB) and restored into a new directory of the sandbox; \
         baselines `tar -cf - | zstd -1 -T1` / `-T0` and `zstd -d | tar -x` of the same bytes on \
         the host, to and from a file. Create {:.0} MB/s (baseline -T1 {:.0} MB/s, {:.2}×; \
         -T0 {:.0} MB/s, {:.2}×), restore {:.0} MB/s (baseline {:.0} MB/s, {:.2}×), medians of \
         {rounds}. The targets are absolute MB/s; the ratios (baseline time / sandpit time, > 1: \
         sandpit is faster) compare like with like: -T0 for create (both multi-threaded). \
         Load average (1 min) {load_before} before the rounds, {load_after} after.",
        raw as f64 / (1u64 << 30) as f64,
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(4),
        stored as f64 / (1u64 << 20) as f64,
        mbps(c),
        mbps(bc),
        bc / c,
        mbps(bcmt),
        bcmt / c,
        mbps(r),
        mbps(br),
        br / r,
    ));
    section.verdicts.push((
        "backup create of 1 GiB mixed files ≥ 300 MB/s".into(),
        format!("{:.0} MB/s", mbps(c)),
        mbps(c) >= 300.0,
    ));
    section.verdicts.push((
        "backup restore ≥ 500 MB/s".into(),
        format!("{:.0} MB/s", mbps(r)),
        mbps(r) >= 500.0,
    ));
    let n = create.len();
    section.rows.push(Row {
        name: format!("backup create, 1 GiB mixed (N={n})"),
        samples: create,
        target: "≥ 300 MB/s".into(),
    });
    section.rows.push(Row {
        name: format!("  baseline `tar | zstd -1 -T1` on the host (N={n})"),
        samples: base_c,
        target: "—".into(),
    });
    section.rows.push(Row {
        name: format!("  baseline `tar | zstd -1 -T0` on the host (N={n})"),
        samples: base_cmt,
        target: "—".into(),
    });
    section.rows.push(Row {
        name: format!("backup restore, 1 GiB mixed (N={n})"),
        samples: restore,
        target: "≥ 500 MB/s".into(),
    });
    section.rows.push(Row {
        name: format!("  baseline `zstd -d | tar -x` on the host (N={n})"),
        samples: base_r,
        target: "—".into(),
    });
    Ok(section)
}

fn sh(command: &str) -> anyhow::Result<()> {
    let status = Command::new("sh").args(["-c", command]).status()?;
    if !status.success() {
        bail!("{command}: {status}");
    }
    Ok(())
}

/// Bytes of the files under `dir` (apparent sizes).
fn dir_bytes(dir: &std::path::Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in walkdir::WalkDir::new(dir) {
        let entry = entry?;
        if entry.file_type().is_file() {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

/// The 1-minute load average (`/proc/loadavg`), or `?`: the box is shared, and the numbers
/// mean little without it.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}
