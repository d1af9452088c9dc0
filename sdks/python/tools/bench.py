"""SDK overhead benchmark (issue 12's targets): warm ``exec('true')`` through the SDK against
the same call made with a bare httpx client in the same run, and ``run_code('1+1')`` p50.

    SANDPIT_URL=... SANDPIT_KEY=... python tools/bench.py [N] [--json]

Prints a markdown table for docs/benchmarks.md's hand-written part. Each pair of samples is
taken alternately (SDK, then bare) on one warm sandbox, so both see the same machine load; each
client keeps its own keep-alive connection. The bare client sends the exact request the SDK
sends and parses the JSON, nothing more. A last pair runs both against an in-process mock
transport, which isolates the SDK's own cost from the server's and the machine's noise.

``--json`` prints one JSON line instead, the sync pairs' samples in ms
(``{"exec": {"sdk": [...], "bare": [...]}, "run_code": {...}}``): what sandpit-bench reads for
its SDK rows.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable

import httpx

from sandpit import AsyncSandpit, CodeContext, Sandpit


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def row(name: str, samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return (
        f"| {name} (N={len(ms)}) | {statistics.median(ms):.3f} | {percentile(ms, 0.95):.3f} "
        f"| {percentile(ms, 0.99):.3f} |"
    )


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def bare_sse(http: httpx.Client, path: str, body: dict[str, object]) -> None:
    with http.stream("POST", path, json=body) as response:
        for _ in response.iter_bytes():
            pass


def main(n: int, as_json: bool = False) -> None:
    client = Sandpit()
    sandbox = client.sandbox("bench-sdk-python", ephemeral=True)
    bare = httpx.Client(base_url=client.url, headers={"Authorization": f"Bearer {client._api_key}"})
    api = f"/v1/sandboxes/{sandbox.id}/api"
    context = None
    try:
        sandbox.exec("true")
        context = sandbox.create_code_context()
        sandbox.run_code("1+1", context=context)
        for _ in range(50):  # warm both connections and the sandbox's session
            sandbox.exec("true")
            bare.post(f"{api}/execute", json={"command": "true"}).json()
        sdk_exec, bare_exec, sdk_code, bare_code = [], [], [], []
        code_body: dict[str, object] = {"context_id": context.id, "code": "1+1"}
        for _ in range(n):
            sdk_exec.append(timed(lambda: sandbox.exec("true")))
            bare_exec.append(
                timed(lambda: bare.post(f"{api}/execute", json={"command": "true"}).json())
            )
            sdk_code.append(timed(lambda: sandbox.run_code("1+1", context=context)))
            bare_code.append(timed(lambda: bare_sse(bare, f"{api}/execute/code", code_body)))
        if as_json:
            pairs = {"exec": (sdk_exec, bare_exec), "run_code": (sdk_code, bare_code)}
            print(
                json.dumps({k: {"sdk": in_ms(a), "bare": in_ms(b)} for k, (a, b) in pairs.items()})
            )
            return
        async_exec, async_bare = asyncio.run(async_samples(sandbox.id, n))
        mocked = mock_samples(n)
    finally:
        if context is not None:
            sandbox.delete_code_context(context)
        sandbox.destroy()
        bare.close()
        client.close()

    print("| measurement | p50 ms | p95 ms | p99 ms |")
    print("|---|---:|---:|---:|")
    print(row("Python SDK `exec('true')`, sync", sdk_exec))
    print(row("baseline: bare `httpx.Client` `POST …/api/execute` `true`", bare_exec))
    print(row("Python SDK `exec('true')`, asyncio", async_exec))
    print(row("baseline: bare `httpx.AsyncClient`, same request", async_bare))
    print(row("Python SDK `run_code('1+1')`, sync", sdk_code))
    print(row("baseline: bare httpx `POST …/api/execute/code` `1+1` (SSE read)", bare_code))
    for name, (sdk, baseline) in mocked.items():
        print(row(f"Python SDK `{name}` against an in-process mock transport", sdk))
        print(row("baseline: bare `httpx.Client`, same mock transport", baseline))
    print()
    summary = {
        "sync_exec_overhead_p50_ms": overhead_ms(sdk_exec, bare_exec),
        "async_exec_overhead_p50_ms": overhead_ms(async_exec, async_bare),
        "run_code_overhead_p50_ms": overhead_ms(sdk_code, bare_code),
        "sdk_cpu_cost_exec_p50_ms": overhead_ms(*mocked["exec"]),
        "sdk_cpu_cost_run_code_p50_ms": overhead_ms(*mocked["run_code"]),
        "run_code_p50_ms": round(statistics.median(sdk_code) * 1000, 3),
    }
    print(json.dumps(summary))


def in_ms(samples: list[float]) -> list[float]:
    return [round(s * 1000, 4) for s in samples]


def overhead_ms(sdk: list[float], bare: list[float]) -> float:
    """SDK p50 minus bare-client p50, in ms."""
    return round((statistics.median(sdk) - statistics.median(bare)) * 1000, 3)


def mock_samples(n: int) -> dict[str, tuple[list[float], list[float]]]:
    """``exec('true')`` and ``run_code('1+1')`` through the SDK and through bare httpx, all
    answered at once by an in-process ``httpx.MockTransport``: the SDK's own CPU cost per call,
    free of the server's and the machine's noise."""
    exec_answer = json.dumps({"success": True, "exitCode": 0, "stdout": "", "stderr": ""})
    code_answer = (
        'data: {"type":"result","text":"2","metadata":{}}\n\n'
        'data: {"type":"execution_complete","execution_count":1}\n\n'
    )

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/execute/code"):
            return httpx.Response(
                200, text=code_answer, headers={"content-type": "text/event-stream"}
            )
        return httpx.Response(200, text=exec_answer, headers={"content-type": "application/json"})

    transport = httpx.MockTransport(answer)
    headers = {"Authorization": "Bearer sp_mock"}
    client = Sandpit("http://mock.invalid", "sp_mock")
    client._http = httpx.Client(base_url=client.url, headers=headers, transport=transport)
    sandbox = client.sandbox("mock")
    sandbox._ready = True  # no create-or-get against the mock
    context = CodeContext("ctx", "python", "/workspace")
    bare = httpx.Client(base_url=client.url, headers=headers, transport=transport)
    api = "/v1/sandboxes/mock/api"
    code_body: dict[str, object] = {"context_id": "ctx", "code": "1+1"}
    calls = {
        "exec": (
            lambda: sandbox.exec("true"),
            lambda: bare.post(f"{api}/execute", json={"command": "true"}).json(),
        ),
        "run_code": (
            lambda: sandbox.run_code("1+1", context=context),
            lambda: bare_sse(bare, f"{api}/execute/code", code_body),
        ),
    }
    samples: dict[str, tuple[list[float], list[float]]] = {}
    for name, (sdk_call, bare_call) in calls.items():
        sdk: list[float] = []
        baseline: list[float] = []
        for _ in range(n):
            sdk.append(timed(sdk_call))
            baseline.append(timed(bare_call))
        samples[name] = (sdk, baseline)
    return samples


async def async_samples(sandbox_id: str, n: int) -> tuple[list[float], list[float]]:
    """``exec('true')`` through the asyncio client and a bare ``httpx.AsyncClient``, alternately."""
    async with AsyncSandpit() as client:
        sandbox = client.sandbox(sandbox_id, ephemeral=True)
        path = f"/v1/sandboxes/{sandbox_id}/api/execute"
        async with httpx.AsyncClient(
            base_url=client.url, headers={"Authorization": f"Bearer {client._api_key}"}
        ) as bare:
            for _ in range(50):
                await sandbox.exec("true")
                (await bare.post(path, json={"command": "true"})).json()
            sdk: list[float] = []
            baseline: list[float] = []
            for _ in range(n):
                started = time.perf_counter()
                await sandbox.exec("true")
                sdk.append(time.perf_counter() - started)
                started = time.perf_counter()
                (await bare.post(path, json={"command": "true"})).json()
                baseline.append(time.perf_counter() - started)
        return sdk, baseline


if __name__ == "__main__":
    counts = [int(a) for a in sys.argv[1:] if a.isdigit()]
    main(counts[0] if counts else 1000, "--json" in sys.argv)
