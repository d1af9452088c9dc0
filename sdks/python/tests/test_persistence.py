"""Backups, snapshots, forks and bucket mounts (docs/persistence.md) against the real server:
archives go to its object store, forks are real sandboxes, mounts are s3fs over the loopback S3
server the Rust test starts (``SANDPIT_TEST_S3``)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import unique

import sandpit
from sandpit import AsyncSandpit, Sandbox, Sandpit, errors

pytestmark = pytest.mark.server


@pytest.fixture
def fresh(client: Sandpit) -> Iterator[list[Sandbox]]:
    """Sandboxes a test makes, destroyed after it."""
    made: list[Sandbox] = []
    yield made
    for sandbox in made:
        sandbox.destroy()


def _new(client: Sandpit, made: list[Sandbox], prefix: str) -> Sandbox:
    sandbox = client.sandbox(unique(prefix))
    made.append(sandbox)
    return sandbox


def test_backup_restore_into_another_sandbox(client: Sandpit, fresh: list[Sandbox]) -> None:
    source = _new(client, fresh, "py-bk-src")
    source.exec(
        "mkdir -p /workspace/proj/empty && printf 'hi\\n' > /workspace/proj/a.txt"
        " && ln -s a.txt /workspace/proj/link && printf x > /workspace/proj/skip.log"
    )
    backup = source.create_backup(
        "/workspace/proj",
        name="py-backup",
        ttl="1h",
        excludes=["*.log"],
        compression={"format": "zstd", "threads": 4},
    )
    assert isinstance(backup, sandpit.BackupInfo)
    assert (backup.dir, backup.name, backup.sandbox_id) == (
        "/workspace/proj",
        "py-backup",
        source.id,
    )
    assert backup.size_bytes > 0 and len(backup.sha256) == 64
    assert client.get_backup(backup.id) == backup
    assert any(b.id == backup.id for b in client.list_backups())

    target = _new(client, fresh, "py-bk-dst")
    target.exec("mkdir -p /workspace/proj && echo old > /workspace/proj/old")
    # The seed's shape: a mapping {id, dir} is enough.
    restored = target.restore_backup({"id": backup.id, "dir": backup.dir})
    assert (restored.success, restored.id, restored.dir) == (True, backup.id, "/workspace/proj")
    listing = target.exec("cd /workspace/proj && find . -printf '%p %y %l\\n' | LC_ALL=C sort")
    assert listing.stdout == ". d \n./a.txt f \n./empty d \n./link l a.txt\n"
    elsewhere = target.restore_backup(backup, dir="/tmp/copy")
    assert elsewhere.dir == "/tmp/copy"
    assert target.read_text("/tmp/copy/a.txt") == "hi\n"

    client.delete_backup(backup.id)
    with pytest.raises(errors.BackupNotFoundError) as caught:
        client.get_backup(backup.id)
    assert (caught.value.code, caught.value.http_status) == ("BACKUP_NOT_FOUND", 404)


def test_backup_errors_are_typed(client: Sandpit, fresh: list[Sandbox]) -> None:
    sandbox = _new(client, fresh, "py-bk-bad")
    with pytest.raises(errors.BackupNotFoundError):
        sandbox.restore_backup({"id": "no-such-backup", "dir": "/workspace"})
    with pytest.raises(errors.InvalidBackupConfigError) as caught:
        sandbox.create_backup("/etc")
    assert "/workspace" in str(caught.value)
    with pytest.raises(errors.InvalidBackupConfigError):
        sandbox.create_backup("/workspace", compression={"format": "gzip"})


def test_snapshot_create_from_and_fork(client: Sandpit, fresh: list[Sandbox]) -> None:
    parent = _new(client, fresh, "py-snap")
    parent.write_file("/workspace/f", "from-parent")
    snap = parent.create_snapshot("py-one")
    assert isinstance(snap, sandpit.SnapshotInfo)
    assert (snap.name, snap.sandbox_id) == ("py-one", parent.id)
    assert snap.id.startswith("snap-")
    assert client.get_snapshot(snap.id) == snap
    assert any(s.id == snap.id for s in client.list_snapshots())
    assert parent.read_text("/workspace/f") == "from-parent"

    copy = client.create_from_snapshot(snap.id, unique("py-from"))
    fresh.append(copy)
    assert copy.read_text("/workspace/f") == "from-parent"
    with pytest.raises(errors.SnapshotInUseError) as in_use:
        client.delete_snapshot(snap.id)
    assert in_use.value.http_status == 409

    ids = [unique("py-kid"), unique("py-kid")]
    forked = parent.fork(ids=ids)
    fresh.extend(client.sandbox(child.id) for child in forked.sandboxes)
    assert [child.id for child in forked.sandboxes] == ids
    assert all(child.state == "running" for child in forked.sandboxes)
    first, second = (client.sandbox(i) for i in ids)
    first.write_file("/workspace/f", "mine")
    assert second.read_text("/workspace/f") == "from-parent"
    assert parent.read_text("/workspace/f") == "from-parent"

    copy.destroy()
    client.delete_snapshot(snap.id)
    with pytest.raises(errors.SnapshotNotFoundError):
        client.get_snapshot(snap.id)


def test_snapshot_export_and_import(client: Sandpit, fresh: list[Sandbox]) -> None:
    source = _new(client, fresh, "py-exp")
    source.write_file("/workspace/e.txt", "exported")
    snap = source.create_snapshot("py-exp")
    exported = client.export_snapshot(snap.id)
    assert isinstance(exported, sandpit.SnapshotExport)
    assert exported.snapshot_id == snap.id
    assert exported.object_key.startswith("snapshot-exports/")
    assert exported.object_key.endswith(".tar.zst")
    assert len(exported.sha256) == 64 and int(exported.sha256, 16) >= 0
    assert 0 < exported.size_bytes <= exported.raw_bytes

    imported = client.import_snapshot(
        exported.object_key, sha256=exported.sha256, name="py-imported"
    )
    assert isinstance(imported, sandpit.SnapshotInfo)
    assert imported.id != snap.id and imported.name == "py-imported"
    assert client.get_snapshot(imported.id) == imported
    # The export outlives the snapshot it was made of.
    client.delete_snapshot(snap.id)
    copy = client.create_from_snapshot(imported.id, unique("py-imp"))
    fresh.append(copy)
    assert copy.read_text("/workspace/e.txt") == "exported"
    copy.destroy()
    client.delete_snapshot(imported.id)
    # Without sha256 and name: the exported snapshot's name.
    again = client.import_snapshot(exported.object_key)
    assert again.name == "py-exp"
    client.delete_snapshot(again.id)

    with pytest.raises(errors.ValidationFailedError, match="SHA-256"):
        client.import_snapshot(exported.object_key, sha256="0" * 64)
    missing = exported.object_key.removesuffix(".tar.zst") + "-x.tar.zst"
    with pytest.raises(errors.SnapshotExportNotFoundError) as not_found:
        client.import_snapshot(missing)
    assert not_found.value.http_status == 404
    with pytest.raises(errors.ValidationFailedError):
        client.import_snapshot("../etc/passwd")
    with pytest.raises(errors.SnapshotNotFoundError):
        client.export_snapshot("snap-no-such")


@pytest.mark.anyio
async def test_async_backup_and_snapshot(sandbox: Sandbox) -> None:
    async with AsyncSandpit() as client:
        asb = client.sandbox(unique("py-async-persist"))
        try:
            await asb.exec("mkdir -p /tmp/data && echo async > /tmp/data/x")
            backup = await asb.create_backup("/tmp/data")
            await asb.exec("rm -rf /tmp/data")
            restored = await asb.restore_backup(backup)
            assert restored.success
            assert await asb.read_text("/tmp/data/x") == "async\n"
            assert any(b.id == backup.id for b in await client.list_backups())
            await client.delete_backup(backup.id)
            snap = await asb.create_snapshot()
            assert (await client.get_snapshot(snap.id)).sandbox_id == asb.id
            forked = await asb.fork(1)
            assert len(forked.sandboxes) == 1
            child = client.sandbox(forked.sandboxes[0].id)
            assert await child.read_text("/tmp/data/x") == "async\n"
            await child.destroy()
            exported = await client.export_snapshot(snap.id)
            imported = await client.import_snapshot(exported.object_key, sha256=exported.sha256)
            assert imported.id != snap.id
            await client.delete_snapshot(imported.id)
            await client.delete_snapshot(snap.id)
        finally:
            await asb.destroy()


def _s3() -> dict[str, str]:
    raw = os.environ.get("SANDPIT_TEST_S3")
    if not raw:
        pytest.skip("SANDPIT_TEST_S3 is not set (the Rust test sets it)")
    value: dict[str, str] = json.loads(raw)
    return value


def _until(what: str, check: Callable[[], object]) -> None:
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_mount_bucket_against_the_loopback_s3_server(client: Sandpit, fresh: list[Sandbox]) -> None:
    s3 = _s3()
    sandbox = _new(client, fresh, "py-mnt")
    keys = {"accessKeyId": s3["accessKey"], "secretAccessKey": s3["secretKey"]}
    sandbox.mount_bucket(s3["bucket"], "/mnt/data", endpoint=s3["endpoint"], credentials=keys)
    sandbox.exec("echo from-sandbox > /mnt/data/py-inside.txt")
    obj = Path(s3["root"]) / s3["bucket"] / "py-inside.txt"
    _until("the object to appear", obj.exists)
    assert obj.read_text() == "from-sandbox\n"
    (Path(s3["root"]) / s3["bucket"] / "py-outside.txt").write_text("from-outside\n")
    _until(
        "the object to be visible inside",
        lambda: sandbox.exec("cat /mnt/data/py-outside.txt").stdout == "from-outside\n",
    )
    mounts = sandbox.bucket_mounts()
    assert [(m.mount_path, m.mounted, m.read_only) for m in mounts] == [("/mnt/data", True, False)]
    assert s3["secretKey"] not in json.dumps([m.raw for m in mounts])

    sandbox.mount_bucket(
        s3["bucket"],
        "/mnt/ro",
        endpoint=s3["endpoint"],
        credentials={"access_key_id": s3["accessKey"], "secret_access_key": s3["secretKey"]},
        read_only=True,
    )
    refused = sandbox.exec("sh -c 'echo x > /mnt/ro/nope' 2>&1")
    assert refused.exit_code != 0 and "Read-only file system" in refused.stdout

    sandbox.unmount_bucket("/mnt/ro")
    sandbox.unmount_bucket("/mnt/data")
    assert sandbox.bucket_mounts() == []
    with pytest.raises(errors.InvalidMountConfigError):
        sandbox.unmount_bucket("/mnt/data")
    with pytest.raises(errors.MissingCredentialsError):
        sandbox.mount_bucket(s3["bucket"], "/mnt/x", endpoint=s3["endpoint"])


def test_worker_only_mount_forms_raise_not_supported(sandbox: Sandbox) -> None:
    session = sandbox.get_session("default")
    calls: list[Callable[[], None]] = [
        lambda: sandbox.mount_bucket("b", "/mnt/b"),
        lambda: session.mount_bucket("b", "/mnt/b", local_bucket=True),
    ]
    for call in calls:
        with pytest.raises(sandpit.SandpitNotSupportedError) as caught:
            call()
        err = caught.value
        assert isinstance(err, NotImplementedError)
        assert (err.code, err.http_status, err.context["method"]) == (
            "NOT_SUPPORTED",
            0,
            "mount_bucket",
        )
