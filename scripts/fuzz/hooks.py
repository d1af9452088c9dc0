"""schemathesis hooks of scripts/fuzz-api.sh: sandboxes the fuzzer creates stay small.

Generated create/patch bodies may ask for any limits; numbers above these caps are lowered
before the request is sent (other values, invalid ones included, go out as generated).
"""

import schemathesis

CAPS = {"cpus": 0.5, "memoryMb": 128, "pids": 64, "diskMb": 32}


@schemathesis.hook
def before_call(context, case, kwargs):
    body = case.body
    if not isinstance(body, dict) or not isinstance(body.get("limits"), dict):
        return
    limits = body["limits"]
    for name, cap in CAPS.items():
        value = limits.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > cap:
            limits[name] = cap
