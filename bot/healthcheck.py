"""``python -m bot.healthcheck``: the container's HEALTHCHECK. Exit 0 when the running process's
``/healthz`` answers 200 (Discord gateway heartbeating, model thread alive, store writable), 1
otherwise — Docker then marks the container unhealthy and an orchestrator (or
``--restart``/autoheal) replaces it.

The checks live in the web server (API_PORT). With API_PORT empty there is no listener: this falls
back to opening the store's SQLite file, which cannot see a dead gateway or model thread.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import urllib.error
import urllib.request
from pathlib import Path

TIMEOUT_S = 8.0


def main() -> int:
    from pipeline.settings import Settings

    settings = Settings()
    if settings.API_PORT is None:
        db = Path(settings.DATA_DIR) / "voxcanvas.db"
        try:
            sqlite3.connect(f"file:{db}?mode=rw", uri=True, timeout=5).execute("SELECT 1").close()
        except sqlite3.Error as exc:
            print(f"unhealthy: store {db}: {exc}", file=sys.stderr)
            return 1
        print("ok (store only: API_PORT is empty, so /healthz is not served)")
        return 0
    host = settings.API_HOST
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    url = f"http://{host}:{settings.API_PORT}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            print(response.read().decode())
            return 0
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        try:
            failed = [name for name, check in json.loads(body)["checks"].items() if not check["ok"]]
        except (ValueError, KeyError, TypeError):
            failed = []
        print(f"unhealthy ({exc.code}): {', '.join(failed) or body[:200]}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"unhealthy: {url} unreachable: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
