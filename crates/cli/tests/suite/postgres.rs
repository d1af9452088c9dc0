//! `sandpit serve --store postgres://...`: the server runs unchanged on PostgreSQL.

use std::process::Command;

use sandpit_store::test_postgres::TestPostgres;

use super::support::{Served, images_dir_or_skip, sandpit};

/// One value per line of `sql`'s answer, through psql (the Debian client).
fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .arg(url)
        .args(["-X", "-tAc", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A sandbox made through a server on PostgreSQL is in PostgreSQL (not in a SQLite file), and
/// a restarted server finds it with its workspace.
#[test]
fn serial_serve_on_postgres_keeps_sandboxes_across_restarts() {
    let Some(images) =
        images_dir_or_skip("serial_serve_on_postgres_keeps_sandboxes_across_restarts")
    else {
        return;
    };
    let Some(pg) = TestPostgres::start() else {
        return;
    };
    let url = pg.url();
    let data_dir = tempfile::tempdir().unwrap();
    let served = Served::start_in(&images, data_dir.path(), &["--store", &url]);
    served
        .cli()
        .args([
            "exec",
            "pgbox",
            "--",
            "sh",
            "-c",
            "echo kept > /workspace/note.txt && cat /workspace/note.txt",
        ])
        .assert()
        .success()
        .stdout("kept\n")
        .stderr("created sandbox pgbox\n");
    assert!(
        !data_dir.path().join("sandpit.db").exists(),
        "a SQLite file was made besides PostgreSQL"
    );
    assert_eq!(
        psql(
            &url,
            "SELECT tenant || '/' || id || ' ' || state FROM sandboxes"
        ),
        "default/pgbox running\n"
    );
    // The admin key's tenant and the default tenant are PostgreSQL rows too.
    assert!(psql(&url, "SELECT name FROM tenants").contains("default\n"));
    drop(served);

    let served = Served::start_in(&images, data_dir.path(), &["--store", &url]);
    let listed = served.cli().args(["ls"]).assert().success();
    let listed = String::from_utf8(listed.get_output().stdout.clone()).unwrap();
    assert!(listed.contains("pgbox"), "{listed}");
    served
        .cli()
        .args(["exec", "pgbox", "--", "cat", "/workspace/note.txt"])
        .assert()
        .success()
        .stdout("kept\n")
        .stderr("");
    served.cli().args(["rm", "pgbox"]).assert().success();
    assert_eq!(psql(&url, "SELECT count(*) FROM sandboxes"), "0\n");
}

/// A `--store` that is neither `sqlite` nor a PostgreSQL URL is refused with the accepted
/// forms, before anything starts.
#[test]
fn serve_refuses_an_unknown_store() {
    let data_dir = tempfile::tempdir().unwrap();
    let out = sandpit()
        .args(["serve", "--store", "mysql://db/sandpit", "--data-dir"])
        .arg(data_dir.path())
        .assert()
        .failure();
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(
        stderr.contains("expected `sqlite` or a URL postgres://"),
        "{stderr}"
    );
}

/// An unreachable database is a clear start error naming the store (without its password),
/// not a hang.
#[test]
fn serial_serve_reports_an_unreachable_postgres() {
    let Some(images) = images_dir_or_skip("serial_serve_reports_an_unreachable_postgres") else {
        return;
    };
    let data_dir = tempfile::tempdir().unwrap();
    let url = format!(
        "postgres://sandpit:hunter2@/sandpit?host={}",
        data_dir.path().display()
    );
    let out = sandpit()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            &url,
            "--data-dir",
        ])
        .arg(data_dir.path())
        .arg("--images-dir")
        .arg(&images)
        .assert()
        .failure();
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(
        stderr.contains("connecting to the PostgreSQL store postgres://sandpit:***@/sandpit"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("hunter2"),
        "the password was printed: {stderr}"
    );
}
