"""Destroys every sandbox each given API key can see: destroy_all.py URL KEY... (exit 1 if any
could not be destroyed). Used by scripts/fuzz-api.sh after fuzzing."""

import json
import sys
import urllib.parse
import urllib.request


def call(method, url, key):
    request = urllib.request.Request(url, method=method, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        body = response.read()
    return json.loads(body) if body else None


def main():
    base, keys = sys.argv[1], sys.argv[2:]
    failed = 0
    for key in keys:
        ids, cursor = [], None
        while True:
            query = {"limit": 500, **({"cursor": cursor} if cursor else {})}
            page = call("GET", f"{base}/v1/sandboxes?{urllib.parse.urlencode(query)}", key)
            ids += [s["id"] for s in page["sandboxes"]]
            cursor = page.get("nextCursor")
            if not cursor:
                break
        for sandbox_id in ids:
            try:
                call("DELETE", f"{base}/v1/sandboxes/{urllib.parse.quote(sandbox_id, safe='')}", key)
            except Exception as e:  # report every one, then fail
                print(f"could not destroy sandbox {sandbox_id!r}: {e}", file=sys.stderr)
                failed += 1
        print(f"destroyed {len(ids) - failed} sandboxes")
    sys.exit(1 if failed else 0)


main()
