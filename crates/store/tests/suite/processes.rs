use sandpit_protocol::container::{ExitReason, ProcessInfo, ProcessStatus};
use sandpit_store::ArchivedProcess;

use super::Fixture;
use super::new_sandbox;

fn process(id: &str, status: ProcessStatus, start: &str) -> ArchivedProcess {
    ArchivedProcess {
        info: ProcessInfo {
            id: id.into(),
            pid: Some(42),
            command: format!("echo {id}"),
            status,
            start_time: start.into(),
            end_time: Some("2026-01-01T00:00:09.000Z".into()),
            exit_code: (status == ProcessStatus::Completed).then_some(0),
            session_id: Some("default".into()),
            reason: None,
        },
        stdout: format!("{id}\n"),
        stderr: "warn\n".into(),
        stdout_dropped_bytes: 7,
        stderr_dropped_bytes: 0,
    }
}

async fn archived_processes_round_trip_replace_and_go_with_the_sandbox(f: &Fixture) {
    let store = f.open().await;
    let (record, _) = store.create_sandbox(new_sandbox("t", "a")).await.unwrap();
    let (other, _) = store.create_sandbox(new_sandbox("t", "b")).await.unwrap();
    let done = process("p1", ProcessStatus::Completed, "2026-01-01T00:00:02.000Z");
    let mut killed = process("p0", ProcessStatus::Killed, "2026-01-01T00:00:01.000Z");
    // An OOM kill keeps its reason through the archive.
    killed.info.reason = Some(ExitReason::Oom);
    store
        .archive_processes(&record.internal_id, vec![done.clone(), killed.clone()])
        .await
        .unwrap();
    store
        .archive_processes(&other.internal_id, vec![done.clone()])
        .await
        .unwrap();

    let all = store.archived_processes(&record.internal_id).await.unwrap();
    assert_eq!(all, vec![killed.clone(), done.clone()]);
    assert_eq!(
        store
            .archived_process(&record.internal_id, "p1")
            .await
            .unwrap(),
        Some(done.clone())
    );
    assert_eq!(
        store
            .archived_process(&record.internal_id, "nope")
            .await
            .unwrap(),
        None
    );

    // A later sleep archives a process with the same id again: the newer record wins.
    let mut again = done.clone();
    again.stdout = "second run\n".into();
    again.info.status = ProcessStatus::Failed;
    again.info.exit_code = Some(3);
    store
        .archive_processes(&record.internal_id, vec![again.clone()])
        .await
        .unwrap();
    assert_eq!(
        store
            .archived_process(&record.internal_id, "p1")
            .await
            .unwrap(),
        Some(again)
    );

    assert!(store.delete_sandbox("t", "a").await.unwrap());
    assert!(
        store
            .archived_processes(&record.internal_id)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.archived_processes(&other.internal_id).await.unwrap(),
        vec![done]
    );
}

async fn the_archive_keeps_the_newest_records(f: &Fixture) {
    let store = f.open().await;
    let max = sandpit_store::MAX_ARCHIVED_PER_SANDBOX;
    let batch: Vec<ArchivedProcess> = (0..max + 5)
        .map(|n| {
            process(
                &format!("p{n:04}"),
                ProcessStatus::Completed,
                &format!("2026-01-01T00:{:02}:{:02}.000Z", n / 60, n % 60),
            )
        })
        .collect();
    store.archive_processes("sb", batch).await.unwrap();
    let kept = store.archived_processes("sb").await.unwrap();
    assert_eq!(kept.len(), max);
    assert_eq!(kept[0].info.id, "p0005");
    assert_eq!(kept[max - 1].info.id, format!("p{:04}", max + 4));
}

/// A process whose logs take `mib` MiB, started at second `n`.
fn big(id: &str, n: usize, mib: usize) -> ArchivedProcess {
    let mut p = process(
        id,
        ProcessStatus::Completed,
        &format!(
            "2026-01-01T{:02}:{:02}:{:02}.000Z",
            n / 3600,
            n / 60 % 60,
            n % 60
        ),
    );
    p.stdout = "x".repeat(mib << 20);
    p.stderr = String::new();
    p
}

fn bytes(processes: &[ArchivedProcess]) -> u64 {
    processes
        .iter()
        .map(|p| (p.info.command.len() + p.stdout.len() + p.stderr.len()) as u64)
        .sum()
}

async fn the_archive_of_a_sandbox_is_bounded_in_bytes_oldest_first(f: &Fixture) {
    let store = f.open().await;
    let (record, _) = store.create_sandbox(new_sandbox("t", "a")).await.unwrap();
    let sb = record.internal_id.as_str();
    for n in 0..20 {
        store
            .archive_processes(sb, vec![big(&format!("p{n:02}"), n, 1)])
            .await
            .unwrap();
    }
    let kept = store.archived_processes(sb).await.unwrap();
    assert!(bytes(&kept) <= sandpit_store::MAX_ARCHIVE_BYTES_PER_SANDBOX);
    assert!(kept.len() >= 7, "{} kept", kept.len());
    assert_eq!(kept.last().unwrap().info.id, "p19", "the newest stays");
    assert!(
        kept.iter().all(|p| p.info.id.as_str() > "p07"),
        "the oldest went"
    );
}

async fn the_archive_counts_against_the_tenant(f: &Fixture) {
    let store = f.open().await;
    let mut ids = Vec::new();
    for n in 0..12 {
        let (record, _) = store
            .create_sandbox(new_sandbox("greedy", &format!("s{n}")))
            .await
            .unwrap();
        ids.push(record.internal_id);
    }
    let (other, _) = store
        .create_sandbox(new_sandbox("other", "s"))
        .await
        .unwrap();
    store
        .archive_processes(&other.internal_id, vec![big("o", 0, 4)])
        .await
        .unwrap();
    // Each sandbox stays under its own cap; together they exceed the tenant's.
    for (n, id) in ids.iter().enumerate() {
        let batch = (0..7)
            .map(|k| big(&format!("p{k}"), n * 10 + k, 1))
            .collect();
        store.archive_processes(id, batch).await.unwrap();
    }
    let mut total = 0;
    for id in &ids {
        total += bytes(&store.archived_processes(id).await.unwrap());
    }
    assert!(
        total <= sandpit_store::MAX_ARCHIVE_BYTES_PER_TENANT,
        "tenant keeps {total} bytes"
    );
    assert!(total > sandpit_store::MAX_ARCHIVE_BYTES_PER_TENANT / 2);
    assert!(
        store.archived_processes(&ids[0]).await.unwrap().is_empty(),
        "the tenant's oldest records went first"
    );
    assert_eq!(store.archived_processes(&ids[11]).await.unwrap().len(), 7);
    assert_eq!(
        store
            .archived_processes(&other.internal_id)
            .await
            .unwrap()
            .len(),
        1,
        "another tenant's archive is untouched"
    );
}

/// A checkpoint writes while the sandbox exists, and writes nothing once its record is deleted
/// (a checkpoint racing a destroy must not leave records nobody can reach or delete).
async fn checkpoints_write_only_for_existing_sandboxes(f: &Fixture) {
    let store = f.open().await;
    let (record, _) = store.create_sandbox(new_sandbox("t", "a")).await.unwrap();
    let running = process("p1", ProcessStatus::Killed, "2026-01-01T00:00:01.000Z");
    assert!(
        store
            .checkpoint_processes(&record.internal_id, vec![running.clone()])
            .await
            .unwrap()
    );
    // The next checkpoint replaces the record (more output).
    let mut more = running.clone();
    more.stdout.push_str("more\n");
    assert!(
        store
            .checkpoint_processes(&record.internal_id, vec![more.clone()])
            .await
            .unwrap()
    );
    assert_eq!(
        store.archived_processes(&record.internal_id).await.unwrap(),
        vec![more.clone()]
    );

    assert!(store.delete_sandbox("t", "a").await.unwrap());
    assert!(
        !store
            .checkpoint_processes(&record.internal_id, vec![more])
            .await
            .unwrap()
    );
    assert!(
        store
            .archived_processes(&record.internal_id)
            .await
            .unwrap()
            .is_empty()
    );
}

crate::both_backends!(
    archived_processes_round_trip_replace_and_go_with_the_sandbox,
    the_archive_keeps_the_newest_records,
    the_archive_of_a_sandbox_is_bounded_in_bytes_oldest_first,
    the_archive_counts_against_the_tenant,
    checkpoints_write_only_for_existing_sandboxes,
);
