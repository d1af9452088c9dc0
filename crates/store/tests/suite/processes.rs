use sandpit_protocol::container::{ProcessInfo, ProcessStatus};
use sandpit_store::{ArchivedProcess, SqliteStore, Store};

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
        },
        stdout: format!("{id}\n"),
        stderr: "warn\n".into(),
        stdout_dropped_bytes: 7,
        stderr_dropped_bytes: 0,
    }
}

#[tokio::test]
async fn archived_processes_round_trip_replace_and_go_with_the_sandbox() {
    let store = SqliteStore::open_in_memory().unwrap();
    let (record, _) = store.create_sandbox(new_sandbox("t", "a")).await.unwrap();
    let (other, _) = store.create_sandbox(new_sandbox("t", "b")).await.unwrap();
    let done = process("p1", ProcessStatus::Completed, "2026-01-01T00:00:02.000Z");
    let killed = process("p0", ProcessStatus::Killed, "2026-01-01T00:00:01.000Z");
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

#[tokio::test]
async fn the_archive_keeps_the_newest_records() {
    let store = SqliteStore::open_in_memory().unwrap();
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
