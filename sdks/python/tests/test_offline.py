"""What needs no server: the SSE decoder, error mapping, result rendering, and that the
generated files (sync client, error classes) match their sources."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ipython_display

from sandpit import Result, Sandpit, errors
from sandpit._common import SSEDecoder, error_from_response

TOOLS = Path(__file__).resolve().parents[1] / "tools"


@pytest.mark.parametrize("tool", ["unasync.py", "gen_errors.py"])
def test_generated_files_are_current(tool: str) -> None:
    run = subprocess.run(
        [sys.executable, str(TOOLS / tool), "--check"], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr


def test_sse_decoder_handles_split_and_crlf_events() -> None:
    decoder = SSEDecoder()
    stream = b'data: {"type":"a"}\n\ndata: {"type":"b",\r\ndata: "n":1}\r\n\r\ndata: {"type":"c"}'
    events = []
    for i in range(len(stream)):  # byte by byte: events split anywhere
        events += decoder.feed(stream[i : i + 1])
    events += decoder.finish()
    assert events == [{"type": "a"}, {"type": "b", "n": 1}, {"type": "c"}]
    (malformed,) = SSEDecoder().feed(b": comment\n\nevent: x\ndata: not json\n\n")
    assert isinstance(malformed, dict) and malformed["type"] == "error"


def test_sse_error_event_becomes_the_typed_error() -> None:
    # How the server ends a stream that a stop or destroy of its sandbox cut short.
    envelope = {
        "code": "OPERATION_INTERRUPTED",
        "message": "sandbox a was stopped",
        "context": {"sandboxId": "a", "reason": "stopped"},
        "httpStatus": 409,
        "type": "error",
        "error": "sandbox a was stopped",
    }
    stream = (
        b'data: {"type":"stdout","data":"hi"}\n\nevent: error\ndata: '
        + json.dumps(envelope).encode()
    )
    decoder = SSEDecoder()
    first, cut = decoder.feed(stream + b"\n\n")
    assert first == {"type": "stdout", "data": "hi"}
    assert isinstance(cut, errors.OperationInterruptedError)
    assert (cut.reason, cut.http_status, cut.context["sandboxId"]) == ("stopped", 409, "a")
    # An agent's own error event (no event name, no envelope) stays an event.
    (own,) = SSEDecoder().feed(b'data: {"type":"error","error":"boom"}\n\n')
    assert own == {"type": "error", "error": "boom"}


def test_error_envelope_becomes_its_class() -> None:
    body = json.dumps(
        {"code": "SANDBOX_NOT_FOUND", "message": "no", "context": {"sandboxId": "x"}}
    ).encode()
    error = error_from_response(404, body)
    assert isinstance(error, errors.SandboxNotFoundError)
    assert (error.code, error.http_status, error.context) == (
        "SANDBOX_NOT_FOUND",
        404,
        {"sandboxId": "x"},
    )
    unknown = error_from_response(418, b'{"code": "NEW_CODE", "message": "m"}')
    assert type(unknown) is errors.SandpitError and unknown.code == "NEW_CODE"
    plain = error_from_response(502, b"<html>bad gateway</html>")
    assert isinstance(plain, errors.InternalError) and "502" in str(plain)


def test_every_code_has_a_class_with_its_status() -> None:
    assert errors.error_class("QUOTA_EXCEEDED").default_status == 429
    assert issubclass(errors.ReadOnlyError, PermissionError)
    assert len(errors.ERRORS_BY_CODE) >= 80


def test_missing_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SANDPIT_KEY", raising=False)
    with pytest.raises(errors.UnauthorizedError, match="SANDPIT_KEY"):
        Sandpit("http://127.0.0.1:1")


def test_result_display_hooks() -> None:
    png = b"\x89PNG\r\n\x1a\nfake"
    result = Result.from_json(
        {"type": "result", "png": base64.b64encode(png).decode(), "text": "<Figure>"}
    )
    assert result.png == png and result.formats() == ["text", "png"]
    assert ipython_display(result)["image/png"] == png
    # The seed's executors' Jupyter-style bundle is read too.
    bundled = Result.from_json({"type": "result", "data": {"text/html": "<b>x</b>"}})
    assert bundled.html == "<b>x</b>" and bundled._repr_html_() == "<b>x</b>"
