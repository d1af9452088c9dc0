"""The blocking client against a real server: every method of the surface, end to end."""

from __future__ import annotations

import io
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from conftest import ipython_display, unique

import sandpit
from sandpit import Sandbox, Sandpit, errors

pytestmark = pytest.mark.server


# --- commands ------------------------------------------------------------------------------


def test_exec_returns_output_and_exit_code(sandbox: Sandbox) -> None:
    result = sandbox.exec("echo out; echo err >&2; false")
    assert (result.stdout, result.stderr, result.exit_code) == ("out\n", "err\n", 1)
    assert not result.success and not result.timed_out
    assert sandbox.exec("true").success


def test_exec_env_cwd_and_stdin_are_scoped_to_the_command(sandbox: Sandbox) -> None:
    result = sandbox.exec("echo $GREETING; pwd", env={"GREETING": "hi"}, cwd="/tmp")
    assert result.stdout == "hi\n/tmp\n"
    assert sandbox.exec("echo [$GREETING]").stdout == "[]\n"
    assert sandbox.exec("tr a-z A-Z", stdin="shout").stdout == "SHOUT"
    assert sandbox.exec("wc -c", stdin=bytes(range(256))).stdout.strip() == "256"


def test_exec_timeout_kills_the_command_and_says_so(sandbox: Sandbox) -> None:
    started = time.monotonic()
    result = sandbox.exec("sleep 30", timeout=1)
    assert time.monotonic() - started < 20
    assert result.exit_code == 124 and result.timed_out
    assert "timed out" in result.stderr
    # The session survived the timeout.
    assert sandbox.exec("echo alive").stdout == "alive\n"


def test_ctrl_c_during_exec_stops_the_remote_command(sandbox: Sandbox) -> None:
    probe = sandbox.create_session()
    marker = f"sleep {400 + secrets.randbelow(500)}.{secrets.randbelow(10**6):06d}"
    script = (
        "import sys, sandpit\n"
        "sb = sandpit.Sandpit().sandbox(sys.argv[1])\n"
        "session = sb.create_session()\n"
        "print('started', flush=True)\n"
        "sb.get_session(session.id).exec(sys.argv[2])\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, sandbox.id, marker], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "started\n"
        wait_for(lambda: running(probe, marker), "the command to start")
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=30) != 0  # KeyboardInterrupt
        wait_for(lambda: not running(probe, marker), "the command to stop")
    finally:
        child.kill()


def running(probe: sandpit.ExecutionSession, marker: str) -> bool:
    lines = probe.exec("ps -eo args").stdout.splitlines()
    return any(marker in line and "ps -eo" not in line for line in lines)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Polls with a generous deadline (a loaded 2-CPU machine)."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_exec_streams_to_callbacks_in_order(sandbox: Sandbox) -> None:
    seen: list[tuple[str, str]] = []
    result = sandbox.exec(
        "for i in 1 2 3; do echo $i; sleep 0.2; done; echo done >&2",
        on_stdout=lambda data: seen.append(("out", data)),
        on_stderr=lambda data: seen.append(("err", data)),
    )
    assert "".join(d for k, d in seen if k == "out") == "1\n2\n3\n"
    assert seen[-1] == ("err", "done\n")
    # More than one stdout piece: output arrived while the command ran, not all at the end.
    assert len([k for k, _ in seen if k == "out"]) >= 2
    assert result.stdout == "1\n2\n3\n" and result.exit_code == 0


def test_exec_stream_yields_events(sandbox: Sandbox) -> None:
    with sandbox.exec_stream("echo a; echo b >&2; exit_code=7; (exit 7)") as stream:
        events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[0] == "start" and kinds[-1] == "complete"
    assert events[-1].exit_code == 7
    assert [e.data for e in events if e.type == "stdout"] == ["a\n"]


def test_sessionless_sandbox(client: Sandpit, sandbox: Sandbox) -> None:
    bare = client.sandbox(sandbox.id, enable_default_session=False)
    bare.exec("cd /tmp")
    assert bare.exec("pwd").stdout == "/workspace\n"


# --- files ---------------------------------------------------------------------------------


def test_write_and_read_text_and_bytes(sandbox: Sandbox) -> None:
    sandbox.write_file("notes/hello.txt", "héllo\n")
    read = sandbox.read_file("notes/hello.txt")
    assert read.content == "héllo\n" and read.encoding == "utf-8" and not read.is_binary
    blob = bytes(range(256)) * 4
    sandbox.write_file("notes/blob.bin", blob)
    assert sandbox.read_file("notes/blob.bin").bytes == blob
    assert sandbox.read_bytes("notes/blob.bin") == blob
    assert sandbox.read_text("/workspace/notes/hello.txt") == "héllo\n"


def test_file_management(sandbox: Sandbox) -> None:
    sandbox.mkdir("tree/a/b", recursive=True)
    sandbox.write_file("tree/a/one.txt", "1")
    sandbox.rename("tree/a/one.txt", "tree/a/two.txt")
    sandbox.move("tree/a/two.txt", "tree/a/b/three.txt")
    names = {f.relative_path for f in sandbox.list_files("tree", recursive=True)}
    assert names == {"a", "a/b", "a/b/three.txt"}
    (entry,) = [f for f in sandbox.list_files("tree/a/b")]
    assert entry.name == "three.txt" and entry.size == 1 and not entry.is_dir
    assert sandbox.exists("tree/a/b/three.txt")
    sandbox.remove("tree/a/b/three.txt")
    assert not sandbox.exists("tree/a/b/three.txt")


def test_upload_and_download_past_the_json_cap(sandbox: Sandbox, tmp_path: Path) -> None:
    # 40 MiB: more than the JSON file API's 32 MiB, streamed both ways.
    size = 40 * 1024 * 1024
    source = tmp_path / "big.bin"
    with source.open("wb") as file:
        for i in range(40):
            file.write(bytes([i]) * (1024 * 1024))
    assert sandbox.upload("big/big.bin", source) == size
    assert sandbox.exec("stat -c %s big/big.bin").stdout.strip() == str(size)
    target = tmp_path / "back.bin"
    assert sandbox.download("big/big.bin", target) == size
    assert target.read_bytes() == source.read_bytes()
    # A file object and an iterator of chunks upload too; a file object receives a download.
    assert sandbox.upload("big/small.bin", io.BytesIO(b"abc" * 1000)) == 3000
    assert sandbox.upload("big/gen.bin", iter([b"x" * 10, b"y" * 5])) == 15
    sink = io.BytesIO()
    sandbox.download("big/gen.bin", sink)
    assert sink.getvalue() == b"x" * 10 + b"y" * 5
    sandbox.exec("rm -r big")


def test_watch_and_check_changes(sandbox: Sandbox) -> None:
    sandbox.mkdir("watched", recursive=True)
    token = sandbox.check_changes("watched").version
    with sandbox.watch("watched") as events:
        sandbox.write_file("watched/new.txt", "x")
        event = next(e for e in events if e.type == "event")
    assert event.path is not None and event.path.endswith("new.txt")
    assert event.event_type in ("create", "modify")
    assert sandbox.check_changes("watched", since=token).status == "changed"


def test_git_checkout_of_a_local_repository(sandbox: Sandbox) -> None:
    sandbox.exec(
        "rm -rf /tmp/origin /workspace/clone && mkdir /tmp/origin && cd /tmp/origin && "
        "git init -q -b trunk && echo hi > README && git add README && "
        "git -c user.email=a@b -c user.name=t commit -qm init"
    )
    result = sandbox.git_checkout("/tmp/origin", ref="trunk", target_dir="/workspace/clone")
    assert result.branch == "trunk" and result.target_dir == "/workspace/clone"
    assert sandbox.read_text("clone/README") == "hi\n"
    with pytest.raises(errors.GitBranchNotFoundError):
        sandbox.git_checkout("/tmp/origin", branch="nope", target_dir="/workspace/clone2")


# --- errors --------------------------------------------------------------------------------


def test_errors_are_typed_with_code_status_and_context(sandbox: Sandbox) -> None:
    with pytest.raises(errors.FileNotFoundError) as missing:
        sandbox.read_file("does/not/exist")
    assert missing.value.code == "FILE_NOT_FOUND" and missing.value.http_status == 404
    assert missing.value.context["path"] == "does/not/exist"
    assert isinstance(missing.value, FileNotFoundError)  # the builtin too
    sandbox.mkdir("adir", recursive=True)
    with pytest.raises(errors.IsDirectoryError):
        sandbox.remove("adir")
    with pytest.raises(errors.ProcessNotFoundError):
        sandbox.kill_process("no-such-process")


def test_bad_key_is_unauthorized(client: Sandpit) -> None:
    with Sandpit(client.url, "sp_wrong") as bad, pytest.raises(errors.UnauthorizedError) as err:
        bad.list_sandboxes()
    assert err.value.http_status == 401


def test_invalid_id_is_refused_before_any_call(client: Sandpit) -> None:
    for bad in ("-x", "api", "a" * 64, "under_score"):
        with pytest.raises(errors.ValidationFailedError):
            client.sandbox(bad)
    assert client.sandbox("MixedCase", normalize_id=True).id == "mixedcase"


def test_a_down_server_fails_fast_with_a_clear_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with Sandpit(f"http://127.0.0.1:{port}", "sp_x") as down:
        with pytest.raises(sandpit.SandpitConnectionError) as err:
            down.sandbox("anything").exec("true")
    assert time.monotonic() - started < 5
    assert f"127.0.0.1:{port}" in str(err.value)
    assert isinstance(err.value, ConnectionError)


# --- processes -----------------------------------------------------------------------------


def test_process_wait_for_log_and_exit(sandbox: Sandbox) -> None:
    proc = sandbox.start_process("echo starting; sleep 0.5; echo 'listening on 4242'; sleep 0.5")
    found = proc.wait_for_log(re.compile(r"listening on (\d+)"), timeout=30)
    assert found.match.group(1) == "4242"
    assert proc.wait_for_exit(timeout=30) == 0
    assert proc.get_status() == "completed"
    logs = proc.get_logs()
    assert logs.stdout == "starting\nlistening on 4242\n"
    events = list(sandbox.stream_process_logs(proc.id))
    assert events[-1].type == "exit" and events[-1].exit_code == 0


def test_process_wait_for_port_then_kill(sandbox: Sandbox) -> None:
    proc = sandbox.start_process(
        "python3 -m http.server 8123 --bind 127.0.0.1", process_id=unique("web")
    )
    proc.wait_for_port(8123, path="/", timeout=60)
    assert "Directory listing" in sandbox.exec("curl -s http://127.0.0.1:8123/").stdout
    assert sandbox.get_process(proc.id) is not None
    assert proc.id in {p.id for p in sandbox.list_processes()}
    proc.kill()
    assert proc.get_status() in ("killed", "completed", "failed")
    assert sandbox.get_process("nope-never") is None


def test_wait_for_port_raises_when_the_process_exits_first(sandbox: Sandbox) -> None:
    proc = sandbox.start_process("sleep 0.3; exit 3")
    with pytest.raises(errors.ProcessExitedBeforeReadyError):
        proc.wait_for_port(8124, mode="tcp", timeout=60)


def test_wait_for_log_times_out(sandbox: Sandbox) -> None:
    proc = sandbox.start_process("sleep 60")
    started = time.monotonic()
    with pytest.raises(sandpit.SandpitTimeoutError):
        proc.wait_for_log("never printed", timeout=1)
    assert time.monotonic() - started < 15
    proc.kill()


def test_process_stdin_and_kill_all(sandbox: Sandbox) -> None:
    proc = sandbox.start_process("read line; echo got:$line", stdin=True)
    proc.send_stdin("hello\n", close=True)
    assert proc.wait_for_exit(timeout=30) == 0
    assert proc.get_logs().stdout == "got:hello\n"
    sandbox.start_process("sleep 100")
    assert sandbox.kill_all_processes() >= 1
    assert not sandbox.list_processes(status="running")


# --- sessions and environment --------------------------------------------------------------


def test_sessions_keep_their_own_state(sandbox: Sandbox) -> None:
    session = sandbox.create_session(env={"WHO": "session"}, cwd="/tmp")
    try:
        session.exec("cd /var; export LATER=1")
        assert session.exec("pwd; echo $WHO $LATER").stdout == "/var\nsession 1\n"
        assert sandbox.exec("echo [$WHO]").stdout == "[]\n"
        assert session.id in sandbox.list_sessions()
        again = sandbox.get_session(session.id)
        assert again.exec("pwd").stdout == "/var\n"
        session.write_file("rel.txt", "in var")  # relative to the session's cwd
        assert sandbox.read_text("/var/rel.txt") == "in var"
        with pytest.raises(errors.SessionAlreadyExistsError):
            sandbox.create_session(session.id)
    finally:
        sandbox.delete_session(session.id)
    assert session.id not in sandbox.list_sessions()


def test_set_env_vars_reaches_later_commands(sandbox: Sandbox) -> None:
    sandbox.set_env_vars({"PROJECT": "sandpit"})
    assert sandbox.exec("echo $PROJECT").stdout == "sandpit\n"
    assert sandbox.create_session().exec("echo $PROJECT").stdout == "sandpit\n"
    sandbox.set_env_vars({"PROJECT": None})
    assert sandbox.exec("echo [$PROJECT]").stdout == "[]\n"


# --- code interpreter ----------------------------------------------------------------------


def test_run_code_keeps_state_and_reports_errors(sandbox: Sandbox) -> None:
    assert sandbox.run_code("x = 40").error is None
    assert sandbox.run_code("x + 2").text == "42"
    seen: list[str] = []
    run = sandbox.run_code("print('hi')\n1/0", on_stdout=seen.append)
    assert seen == ["hi\n"] and run.stdout == ["hi\n"]
    assert run.error is not None and run.error.name == "ZeroDivisionError"
    assert any("ZeroDivisionError" in line for line in run.error.traceback)


def test_run_code_chart_decodes_to_png_and_renders_in_ipython(sandbox: Sandbox) -> None:
    run = sandbox.run_code(
        "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('t')\nplt.show()"
    )
    (chart,) = [r for r in run.results if r.png is not None]
    assert chart.png is not None and chart.png.startswith(b"\x89PNG\r\n\x1a\n")
    assert ipython_display(chart)["image/png"] == chart.png
    assert ipython_display(run)["image/png"] == chart.png


def test_code_contexts_are_separate(sandbox: Sandbox) -> None:
    one = sandbox.create_code_context()
    two = sandbox.create_code_context("python")
    sandbox.run_code("v = 'one'", context=one)
    assert sandbox.run_code("v", context=one).text == "'one'"
    assert sandbox.run_code("v", context=two).error is not None
    js = sandbox.create_code_context("javascript")
    assert sandbox.run_code("[1, 2].map((x) => x * 2)", context=js).results[0].json == [2, 4]
    ids = {c.id for c in sandbox.list_code_contexts()}
    assert {one.id, two.id, js.id} <= ids
    for ctx in (one, two, js):
        sandbox.delete_code_context(ctx)
    with pytest.raises(errors.ContextNotFoundError):
        sandbox.run_code("1", context=one)


def test_run_code_stream_events(sandbox: Sandbox) -> None:
    with sandbox.run_code_stream("print(1)\n2") as stream:
        kinds = [event["type"] for event in stream]
    assert kinds[0] == "stdout" and kinds[-1] == "execution_complete" and "result" in kinds


# --- ports, network, secrets, terminal, lifecycle ------------------------------------------


def test_expose_port_serves_the_preview_url(sandbox: Sandbox) -> None:
    proc = sandbox.start_process("python3 -m http.server 8130 --bind 127.0.0.1")
    proc.wait_for_port(8130, timeout=60)
    exposed = sandbox.expose_port(8130, name="web")
    assert exposed.port == 8130 and exposed.name == "web" and exposed.token
    assert [p.port for p in sandbox.get_exposed_ports()] == [8130]
    url = httpx.URL(exposed.url)
    # The preview host names the sandbox; reach the server's loopback port with that Host.
    server = httpx.URL(os.environ["SANDPIT_URL"])
    answer = httpx.get(str(server.copy_with(path="/")), headers={"Host": url.netloc.decode()})
    assert answer.status_code == 200 and "Directory listing" in answer.text
    sandbox.unexpose_port(8130)
    assert sandbox.get_exposed_ports() == []
    with pytest.raises(errors.PortNotExposedError):
        sandbox.unexpose_port(8130)
    proc.kill()


def test_network_policy_and_secrets(sandbox: Sandbox) -> None:
    info = sandbox.set_network("allowlist", ["example.com"])
    assert info.network == {"mode": "allowlist", "allow": ["example.com"]}
    info = sandbox.set_secrets({"API_TOKEN": {"value": "s3cret", "hosts": ["api.example.com"]}})
    assert [s["name"] for s in info.secrets] == ["API_TOKEN"]
    # Inside, the variable holds a placeholder, never the value.
    inside = sandbox.create_session().exec("echo $API_TOKEN").stdout.strip()
    assert inside and "s3cret" not in inside
    sandbox.set_secrets({})
    sandbox.set_network("none")
    assert isinstance(sandbox.egress_log(), list)


def test_terminal_runs_an_interactive_shell(sandbox: Sandbox) -> None:
    # A session of its own: a terminal replays its session's earlier output to a new client.
    with sandbox.create_session().terminal(cols=100, rows=30) as term:
        # "42x", not "42": the prompt shows the sandbox id, whose random hex may hold "42".
        term.send("stty size; echo $((6 * 7))x\n")
        output = term.read_until("42x", timeout=30)
        assert b"30 100" in output
        term.resize(120, 40)
        term.send("stty size\n")
        assert b"40 120" in term.read_until("40 120", timeout=30)
        term.send("exit\n")
        while term.recv(timeout=30):
            pass
        assert term.exit_code == 0


def test_terminal_url_opens_without_the_key_once(sandbox: Sandbox) -> None:
    from websockets.sync.client import connect

    url = sandbox.terminal_url(cols=90, rows=20)
    assert url.startswith("ws://") and "ticket=" in url
    assert os.environ["SANDPIT_KEY"] not in url
    with connect(url) as socket:  # no Authorization header: the ticket is the credential
        while (frame := socket.recv(timeout=30)) != '{"type":"ready"}':
            assert isinstance(frame, (bytes, str))
    with pytest.raises(Exception, match=r"HTTP 40[13]"):  # used up
        connect(url).close()


def test_ephemeral_sandbox_is_destroyed_on_exit(client: Sandpit) -> None:
    name = unique("eph")
    with client.sandbox(name, ephemeral=True, limits={"memory_mb": 256}) as sb:
        info = sb.info()
        assert info.ephemeral and info.limits["memoryMb"] == 256 and info.state == "running"
        assert name in {s.id for s in client.list_sandboxes()}
        sb.stop()
        assert sb.info().state == "sleeping"
        assert sb.exec("echo woke").stdout == "woke\n"
    assert name not in {s.id for s in client.list_sandboxes()}


def test_options_conflict_is_typed(client: Sandpit, sandbox: Sandbox) -> None:
    with pytest.raises(errors.SandboxConflictError):
        client.sandbox(sandbox.id, ephemeral=False).exec("true")


# --- labels, ttl, usage, stale ports, OOM, interrupted streams -----------------------------


def test_labels_ttl_and_keep_alive_while_busy(client: Sandpit) -> None:
    name, tag = unique("lbl"), unique("suite")
    sb = client.sandbox(
        name, labels={"suite": tag, "tier": "gold"}, ttl="1h", keep_alive_while_busy=False
    )
    try:
        info = sb.info()
        assert info.labels == {"suite": tag, "tier": "gold"} and not info.keep_alive_while_busy
        assert info.expires_at is not None
        left = info.expires_at - datetime.now(timezone.utc)
        assert timedelta(minutes=55) < left <= timedelta(hours=1)
        assert [s.id for s in client.list_sandboxes(labels={"suite": tag})] == [name]
        assert client.list_sandboxes(labels={"suite": tag, "tier": "silver"}) == []
        # Labels merge (None removes one); ttl=0 removes the expiry; env waits for a restart.
        info = sb.update(
            labels={"tier": None, "team": "ml"}, ttl=0, keep_alive_while_busy=True, env={"A": "b"}
        )
        assert info.labels == {"suite": tag, "team": "ml"} and info.expires_at is None
        assert info.keep_alive_while_busy and info.pending_restart == ["env"]
        assert [s.id for s in client.list_sandboxes(labels={"team": "ml", "suite": tag})] == [name]
        assert sb.update(keep_alive=False).pending_restart == []
        # A ttl that runs out destroys the sandbox (the reaper ticks every second).
        assert sb.update(ttl=1).expires_at is not None
        wait_for(lambda: name not in {s.id for s in client.list_sandboxes()}, "the ttl")
        with pytest.raises(errors.SandboxNotFoundError):
            sb.info()
    finally:
        sb.destroy()


def test_usage_and_stale_ports(client: Sandpit) -> None:
    sb = client.sandbox(unique("use"))
    try:
        sb.exec("head -c 3000000 /dev/urandom > blob; sha256sum blob")
        usage = sb.usage()
        assert usage.state == "running" and usage.cpu_usec > 0 and usage.pids >= 1
        assert usage.memory_bytes > 0 and usage.memory_peak_bytes > 0
        assert usage.disk_bytes >= 3_000_000 and usage.disk_complete
        assert usage.network_bytes_up == 0 and usage.raw["state"] == "running"
        exposed = sb.expose_port(8150)
        assert not exposed.stale
        sb.stop()
        # Reading usage or ports does not wake it; what listened is gone, so the URL is stale.
        asleep = sb.usage()
        assert asleep.state == "sleeping" and (asleep.cpu_usec, asleep.pids) == (0, 0)
        assert asleep.disk_bytes >= 3_000_000  # the files stay
        (port,) = sb.get_exposed_ports()
        assert port.port == 8150 and port.stale and port.url == exposed.url
        assert sb.info().state == "sleeping"
    finally:
        sb.destroy()


def test_out_of_memory_is_reported_as_such(client: Sandpit) -> None:
    hog = "python3 -c 'x = bytearray(400 * 1024 * 1024)'"
    with client.sandbox(unique("oom"), ephemeral=True, limits={"memory_mb": 128}) as sb:
        result = sb.exec(hog)
        assert (result.exit_code, result.reason) == (137, "oom")
        assert "out of memory" in result.stderr
        assert sb.exec("true").reason is None
        with sb.exec_stream(hog) as stream:
            complete = [e for e in stream if e.type == "complete"][-1]
        assert (complete.exit_code, complete.reason) == (137, "oom")
        proc = sb.start_process(hog)
        assert proc.wait_for_exit(timeout=60) == 137
        assert (proc.status, proc.reason) == ("killed", "oom")
        last = list(sb.stream_process_logs(proc.id))[-1]
        assert (last.type, last.exit_code, last.reason) == ("exit", 137, "oom")


def test_streams_cut_by_stop_raise_operation_interrupted(client: Sandpit) -> None:
    with client.sandbox(unique("cut"), ephemeral=True) as sb:

        def interrupted(consume: Callable[[], object]) -> errors.OperationInterruptedError:
            with pytest.raises(errors.OperationInterruptedError) as err:
                consume()
            assert err.value.http_status == 409 and err.value.context["sandboxId"] == sb.id
            return err.value

        def exec_stream() -> None:
            with sb.exec_stream("echo started; sleep 60") as stream:
                for event in stream:
                    if event.type == "stdout":
                        sb.stop()

        assert interrupted(exec_stream).reason == "stopped"

        # With callbacks (here: stop from inside one) exec raises it too, and so does
        # run_code; the next call wakes the sandbox.
        def stop(_: str) -> None:
            sb.stop()

        assert interrupted(lambda: sb.exec("echo go; sleep 60", on_stdout=stop)).reason
        code = "import time\nprint('go', flush=True)\ntime.sleep(60)"
        assert interrupted(lambda: sb.run_code(code, on_stdout=stop)).reason == "stopped"
        proc = sb.start_process("echo up; sleep 60")

        def log_stream() -> None:
            with proc.stream_logs() as logs:
                for event in logs:
                    if event.type == "stdout":
                        sb.stop()

        assert interrupted(log_stream).reason == "stopped"
        sb.mkdir("cutwatch", recursive=True)

        def watch() -> None:
            with sb.watch("cutwatch") as events:
                sb.stop()
                list(events)

        assert interrupted(watch).reason == "stopped"
        assert sb.exec("echo awake").stdout == "awake\n"


# --- stdin while a command runs, and the seed's calls sandpit does not serve ---------------


def test_stdin_stream_is_answered_line_by_line(sandbox: Sandbox) -> None:
    """Each line is sent only after the command answered the previous one: the input really
    arrives while the command runs (the WebSocket control transport), not up front."""
    import queue

    lines: queue.Queue[str | None] = queue.Queue()

    def feed() -> Iterator[str]:
        while (line := lines.get(timeout=60)) is not None:
            yield line

    lines.put("one\n")
    seen = ""
    with sandbox.exec_stream(
        'while read -r l; do echo "got $l"; done; echo bye', stdin_stream=feed()
    ) as events:
        for event in events:
            if event.type == "stdout":
                seen += event.data
                if seen == "got one\n":
                    lines.put("two\n")
                elif seen == "got one\ngot two\n":
                    lines.put(None)
            elif event.type == "complete":
                assert event.exit_code == 0
                break
    assert seen == "got one\ngot two\nbye\n"


def test_stdin_stream_bytes_are_exact_and_options_apply(sandbox: Sandbox) -> None:
    import hashlib

    blob = bytes((i * 7 + 3) % 256 for i in range(300_000))
    chunks: list[str | bytes] = [blob[:100_000], "é\n", blob[100_000:]]
    expected = hashlib.sha256(blob[:100_000] + "é\n".encode() + blob[100_000:]).hexdigest()
    result = sandbox.exec("sha256sum | cut -d' ' -f1", stdin_stream=chunks)
    assert result.stdout.strip() == expected, result.stderr
    session = sandbox.create_session(cwd="/tmp")
    out = session.exec('cat; echo " $(pwd) $X"', stdin_stream=_chunks("a", b"b"), env={"X": "x"})
    assert out.stdout == "ab /tmp x\n"
    with pytest.raises(errors.ValidationFailedError):
        sandbox.exec("cat", stdin="x", stdin_stream=["y"])


def _chunks(*parts: str | bytes) -> Iterator[str | bytes]:
    yield from parts


def test_seed_names_process_logs_and_port_checks(sandbox: Sandbox) -> None:
    proc = sandbox.start_process("echo logged; echo oops >&2")
    assert proc.wait_for_exit(timeout=60) == 0
    logs = sandbox.get_process_logs(proc.id)
    assert (logs.stdout, logs.stderr) == ("logged\n", "oops\n")
    assert sandbox.cleanup_completed_processes() == 0
    assert sandbox.get_process(proc.id) is not None  # kept for its logs
    sandbox.write_file("/tmp/seed-a", "x")
    sandbox.rename_file("/tmp/seed-a", "/tmp/seed-b")
    sandbox.move_file("/tmp/seed-b", "/tmp/seed-c")
    assert sandbox.read_text("/tmp/seed-c") == "x"
    exposed = sandbox.expose_port(8790, token="seedtok")
    assert sandbox.is_port_exposed(8790) and not sandbox.is_port_exposed(8791)
    assert sandbox.validate_port_token(8790, "seedtok")
    assert not sandbox.validate_port_token(8790, "other")
    assert exposed.token == "seedtok"
    sandbox.unexpose_port(8790)
    assert not sandbox.is_port_exposed(8790)


def test_watch_sandboxes_sees_the_tenants_changes(client: Sandpit) -> None:
    name = unique("py-events")
    with client.watch_sandboxes() as events:
        client.sandbox(name).exec("true")
        client.sandbox(name).destroy()
        seen = []
        for event in events:
            if event.sandbox_id != name:
                continue
            seen.append((event.kind, event.state))
            if event.kind == "destroyed":
                break
    assert seen == [("created", "creating"), ("started", "running"), ("destroyed", "destroyed")]
