"""The asyncio client against a real server: the same surface, concurrency, and cancellation
that stops the remote work (checked with ``ps`` inside the sandbox)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator

import pytest
from conftest import unique

import sandpit
from sandpit import AsyncSandbox, AsyncSandpit, Sandbox, errors

pytestmark = [pytest.mark.server, pytest.mark.anyio]


@pytest.fixture
async def asb(sandbox: Sandbox) -> AsyncIterator[AsyncSandbox]:
    """The shared sandbox through an asyncio client of the test's own event loop."""
    async with AsyncSandpit() as client:
        yield client.sandbox(sandbox.id, ephemeral=True)


async def _running(probe: sandpit.AsyncExecutionSession, marker: str) -> bool:
    """Whether a process whose command line contains ``marker`` runs in the sandbox."""
    ps = await probe.exec("ps -eo args")
    return any(marker in line and "ps -eo" not in line for line in ps.stdout.splitlines())


async def _eventually(probe: sandpit.AsyncExecutionSession, marker: str, want: bool) -> None:
    """Polls ``ps`` (generous deadline: a loaded 2-CPU machine) until the marker's process
    is running (``want``) or gone."""
    deadline = time.monotonic() + 30
    while await _running(probe, marker) != want:
        assert time.monotonic() < deadline, f"{marker} still {'absent' if want else 'running'}"
        await asyncio.sleep(0.1)


def _sleep_marker() -> tuple[str, str]:
    """A sleep command unique to the test (``sleep 812.004211``) and what ``ps`` shows of it."""
    seconds = f"{300 + secrets.randbelow(1000)}.{secrets.randbelow(10**6):06d}"
    return f"sleep {seconds}", f"sleep {seconds}"


async def test_exec_and_streaming(asb: AsyncSandbox) -> None:
    result = await asb.exec("echo hi; echo err >&2")
    assert (result.stdout, result.stderr, result.exit_code) == ("hi\n", "err\n", 0)
    chunks: list[str] = []
    result = await asb.exec("echo 1; sleep 0.2; echo 2", on_stdout=chunks.append)
    assert "".join(chunks) == "1\n2\n" and result.success
    async with asb.exec_stream("echo a; echo b") as stream:
        events = [event async for event in stream]
    assert events[-1].type == "complete" and events[-1].exit_code == 0


async def test_concurrent_execs_run_in_parallel(asb: AsyncSandbox) -> None:
    # Commands of different sessions don't queue behind each other: four 2 s sleeps take
    # about 2 s, not 8 (the bound leaves room for a loaded machine).
    sessions = [await asb.create_session() for _ in range(4)]
    started = time.monotonic()
    results = await asyncio.gather(*(s.exec("sleep 2") for s in sessions))
    assert all(r.success for r in results)
    assert time.monotonic() - started < 6
    for s in sessions:
        await asb.delete_session(s.id)


async def test_cancelling_exec_stops_the_remote_command(asb: AsyncSandbox) -> None:
    command, marker = _sleep_marker()
    worker = await asb.create_session()
    probe = await asb.create_session()
    task = asyncio.create_task(worker.exec(command))
    await _eventually(probe, marker, want=True)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _eventually(probe, marker, want=False)
    # The session survived and answers at once.
    assert (await worker.exec("echo next")).stdout == "next\n"


async def test_cancelling_a_streamed_exec_stops_it(asb: AsyncSandbox) -> None:
    command, marker = _sleep_marker()
    probe = await asb.create_session()
    seen: list[str] = []
    task = asyncio.create_task(asb.exec(f"echo started; {command}", on_stdout=seen.append))
    await _eventually(probe, marker, want=True)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["started\n"]
    await _eventually(probe, marker, want=False)


async def test_closing_an_exec_stream_early_stops_the_command(asb: AsyncSandbox) -> None:
    command, marker = _sleep_marker()
    probe = await asb.create_session()
    async with asb.exec_stream(f"echo go; {command}") as stream:
        async for event in stream:
            if event.type == "stdout":
                break
    await _eventually(probe, marker, want=False)


async def test_asyncio_timeout_around_exec_stops_the_command(asb: AsyncSandbox) -> None:
    command, marker = _sleep_marker()
    probe = await asb.create_session()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(asb.exec(command), 1.5)
    await _eventually(probe, marker, want=False)


async def test_cancelling_run_code_interrupts_the_run(asb: AsyncSandbox) -> None:
    ctx = await asb.create_code_context()
    task = asyncio.create_task(
        asb.run_code("import time\nfor i in range(600):\n    time.sleep(0.1)\n", context=ctx)
    )
    await asyncio.sleep(1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The context is usable again at once: the interrupted run no longer holds it.
    started = time.monotonic()
    run = await asb.run_code("21 * 2", context=ctx)
    assert run.text == "42" and time.monotonic() - started < 20
    await asb.delete_code_context(ctx)


async def test_closing_a_log_stream_early_leaves_the_process_running(asb: AsyncSandbox) -> None:
    proc = await asb.start_process("while true; do echo tick; sleep 0.2; done")
    async with proc.stream_logs() as logs:
        async for event in logs:
            if event.type == "stdout":
                break
    assert await proc.get_status() == "running"
    found = await proc.wait_for_log("tick", timeout=30)
    assert found.line == "tick"
    await proc.kill()
    assert await proc.get_status() == "killed"


async def test_async_files_processes_and_code(asb: AsyncSandbox) -> None:
    await asb.write_file("async/a.txt", "async")
    assert (await asb.read_file("async/a.txt")).content == "async"
    assert await asb.upload("async/b.bin", b"\x00\x01") == 2
    assert await asb.read_bytes("async/b.bin") == b"\x00\x01"
    assert {f.name for f in await asb.list_files("async")} == {"a.txt", "b.bin"}
    proc = await asb.start_process("sleep 0.2; echo done")
    assert await proc.wait_for_exit(timeout=30) == 0
    assert (await proc.get_logs()).stdout == "done\n"
    run = await asb.run_code("sum(range(10))")
    assert run.text == "45"
    with pytest.raises(errors.FileNotFoundError):
        await asb.read_file("async/missing")


async def test_async_terminal(asb: AsyncSandbox) -> None:
    session = await asb.create_session()
    async with await session.terminal() as term:
        await term.send("echo $((40 + 2))x\n")  # "42x": the prompt's id is hex
        assert b"42x" in await term.read_until("42x", timeout=30)


async def test_async_context_manager_destroys_ephemeral(sandbox: Sandbox) -> None:
    name = unique("aeph")
    async with AsyncSandpit() as client:
        async with client.sandbox(name, ephemeral=True) as sb:
            assert (await sb.exec("echo up")).stdout == "up\n"
        assert name not in {s.id for s in await client.list_sandboxes()}


async def test_async_down_server_is_a_clear_error() -> None:
    async with AsyncSandpit("http://127.0.0.1:9", "sp_x") as down:
        started = time.monotonic()
        with pytest.raises(sandpit.SandpitConnectionError):
            await down.sandbox("x").exec("true")
        assert time.monotonic() - started < 5


async def test_async_watch_sessions_env_ports_network(asb: AsyncSandbox) -> None:
    await asb.mkdir("awatched", recursive=True)
    token = (await asb.check_changes("awatched")).version
    async with await asb.watch("awatched") as events:
        await asb.write_file("awatched/f.txt", "x")
        async for event in events:
            if event.type == "event":
                assert event.path is not None and event.path.endswith("f.txt")
                break
    assert (await asb.check_changes("awatched", since=token)).status == "changed"

    session = await asb.create_session(cwd="/tmp")
    await session.exec("cd /var")
    assert (await asb.get_session(session.id).exec("pwd")).stdout == "/var\n"
    await asb.set_env_vars({"ASYNC_VAR": "yes"})
    assert (await asb.exec("echo $ASYNC_VAR")).stdout == "yes\n"
    await asb.set_env_vars({"ASYNC_VAR": None})
    await asb.delete_session(session.id)

    proc = await asb.start_process("python3 -m http.server 8140 --bind 127.0.0.1")
    await proc.wait_for_port(8140, timeout=60)
    exposed = await asb.expose_port(8140)
    assert [p.port for p in await asb.get_exposed_ports()] == [exposed.port]
    await asb.unexpose_port(8140)
    await proc.kill()

    info = await asb.set_network("allowlist", ["example.org"])
    assert info.network["allow"] == ["example.org"]
    await asb.set_network("none")


async def test_async_calls_cut_by_stop_or_destroy_raise_operation_interrupted() -> None:
    async with AsyncSandpit() as client:
        sb = client.sandbox(unique("acut"))
        try:
            # A buffered call (an HTTP 409 answer) and a streamed one (the stream's last event).
            buffered = asyncio.create_task(sb.exec("sleep 60"))
            await asyncio.sleep(1.0)
            await sb.stop()
            with pytest.raises(errors.OperationInterruptedError) as err:
                await buffered
            assert err.value.reason == "stopped"
            started = asyncio.Event()
            streamed = asyncio.create_task(
                sb.run_code(
                    "import time\nprint('go', flush=True)\ntime.sleep(60)",
                    on_stdout=lambda _: started.set(),
                )
            )
            await asyncio.wait_for(started.wait(), 60)
            await sb.destroy()
            with pytest.raises(errors.OperationInterruptedError) as err:
                await streamed
            assert err.value.reason == "destroyed"
        finally:
            await sb.destroy()


async def test_async_stdin_stream_and_cancelling_it(asb: AsyncSandbox) -> None:
    async def chunks() -> AsyncIterator[str | bytes]:
        yield "a"
        await asyncio.sleep(0.05)
        yield b"b\n"

    assert (await asb.exec("cat", stdin_stream=chunks())).stdout == "ab\n"
    # A command waiting for input that never ends: cancelling the task stops it remotely.
    probe = await asb.create_session()
    command, marker = _sleep_marker()

    async def forever() -> AsyncIterator[str]:
        while True:
            yield "x\n"
            await asyncio.sleep(0.2)

    task = asyncio.create_task(asb.exec(f"cat >/dev/null & {command}", stdin_stream=forever()))
    await _eventually(probe, marker, True)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _eventually(probe, marker, False)


async def test_async_watch_sandboxes_sees_the_tenants_changes() -> None:
    async with AsyncSandpit() as client:
        name = unique("py-events")
        async with await client.watch_sandboxes() as events:
            await client.sandbox(name).exec("true")
            await client.sandbox(name).destroy()
            seen = []
            async for event in events:
                if event.sandbox_id != name:
                    continue
                assert event.seq > 0 and event.at.endswith("Z")
                seen.append((event.kind, event.state))
                if event.kind == "destroyed":
                    break
        assert seen == [
            ("created", "creating"),
            ("started", "running"),
            ("destroyed", "destroyed"),
        ]
