//! Fork rows (issue 13): fork of a sandbox → first `exec true` in the child, for a 10 MiB and a
//! 1 GiB workspace side by side, against a cold create → first exec measured in the same run.
//! Fork cost should not grow with the workspace: the parent's writable layer becomes a shared
//! read-only layer (one rename), and the child starts on an empty writable layer above it.

use std::time::Instant;

use sandpit_client::protocol::control::{CreateSandboxRequest, ForkRequest};
use sandpit_client::{Client, ExecOptions};

use crate::stats::Samples;
use crate::{Row, Section, cold_creates, exec_true};

/// Workspace sizes measured, MiB.
const SIZES_MIB: [u64; 2] = [10, 1024];

pub async fn measure(client: &Client, samples: usize) -> anyhow::Result<Section> {
    let mut section = Section::default();
    let run = std::process::id();
    eprintln!("cold create → exec x{samples} (fork baseline)...");
    let cold = cold_creates(client, &format!("fork-cold-{run}"), samples).await?;
    let mut p50s = Vec::new();
    let mut rows = Vec::new();
    for mib in SIZES_MIB {
        let parent = format!("fork-parent-{run}-{mib}");
        client
            .create(&CreateSandboxRequest {
                id: Some(parent.clone()),
                keep_alive: Some(true),
                ..Default::default()
            })
            .await?;
        eprintln!("fork of a {mib} MiB workspace x{samples}...");
        // Written and flushed first: a fork stops the parent, and the overlay's unmount then
        // flushes whatever the parent wrote and the kernel has not written back yet (see
        // docs/persistence.md); a workspace prepared earlier is on disk already.
        let fill = format!(
            "head -c {} /dev/urandom > /workspace/data && sync",
            mib << 20
        );
        let out = client
            .sandbox(&parent)
            .exec(&fill, &ExecOptions::default())
            .await?;
        anyhow::ensure!(out.exit_code == 0, "filling the workspace: {}", out.stderr);
        let (mut total, mut forked) = (Samples::default(), Samples::default());
        for i in 0..samples {
            let child = format!("fork-child-{run}-{mib}-{i}");
            let t = Instant::now();
            let answer = client
                .fork(
                    &parent,
                    &ForkRequest {
                        ids: Some(vec![child.clone()]),
                        ..Default::default()
                    },
                )
                .await?;
            forked.push(t.elapsed());
            let result = exec_true(&client.sandbox(&child)).await;
            total.push(t.elapsed());
            result?;
            let out = client
                .sandbox(&child)
                .exec("stat -c %s /workspace/data", &ExecOptions::default())
                .await?;
            anyhow::ensure!(
                out.stdout.trim() == (mib << 20).to_string(),
                "the child does not see the parent's workspace: {out:?}"
            );
            client.destroy(&child).await?;
            client.delete_snapshot(&answer.snapshot.id).await?;
        }
        client.destroy(&parent).await?;
        section.notes.push(format!(
            "Fork of a {mib} MiB workspace: `POST …/fork` p50 {:.2} ms (p99 {:.2}; it stops the \
             parent, freezes its writable layer, starts the child and wakes the parent), then \
             the child's first exec.",
            forked.p50(),
            forked.p99()
        ));
        p50s.push((mib, total.p50()));
        rows.push(Row {
            name: format!(
                "fork ({mib} MiB workspace) → first `exec true` in the child (N={})",
                total.len()
            ),
            samples: total,
            target: if mib == 1024 {
                "p50 ≤ 100 ms, independent of workspace size".into()
            } else {
                String::new()
            },
        });
    }
    let cold_p50 = cold.p50();
    rows.push(Row {
        name: format!(
            "baseline: cold create → first `exec true` (same run, N={})",
            cold.len()
        ),
        samples: cold,
        target: String::new(),
    });
    section.rows = rows;
    if let [(_, small), (_, big)] = p50s[..] {
        section.notes.push(format!(
            "Ratios: fork 1 GiB / fork 10 MiB p50 = **{:.2}×**; fork 1 GiB / cold create p50 = **{:.2}×**.",
            big / small,
            big / cold_p50
        ));
        section.verdicts.push((
            "fork of 1 GiB → first exec p50 ≤ 100 ms".into(),
            format!("{big:.2} ms"),
            big <= 100.0,
        ));
        section.verdicts.push((
            "fork independent of workspace size (1 GiB / 10 MiB p50 ≤ 1.5×)".into(),
            format!("{:.2}×", big / small),
            big / small <= 1.5,
        ));
    }
    Ok(section)
}
