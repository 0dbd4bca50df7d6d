"""The Mux-compatibility table in ``docs/API.md``, generated from the SDK test runs.

The mux-python tests build their client with :func:`mux_python_client` (every SDK method call is recorded by
the method's name, with what it came to: deserialized by the SDK's models, or the exception) and
``tests/test_mux_node.py`` records every operation of ``tests/js/mux_node_client.mjs``; :func:`record` writes
them when ``KINORAY_COMPAT_OUT`` names a file (JSON lines). ``make compat-table`` runs them so and then
``python -m tests.compat <file>`` rewrites the table between its markers in ``docs/API.md``:
operation, SDK, result. ``tests/test_mux_node.py`` checks the table still lists every operation the Node client
makes, so it cannot silently go stale.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

__all__ = ["API_DOC", "END", "START", "mux_python_client", "record", "table_rows"]

API_DOC = Path(__file__).parent.parent / "docs" / "API.md"
START, END = "<!-- compat-table:start -->", "<!-- compat-table:end -->"
_lock = threading.Lock()


def record(sdk: str, operation: str, ok: bool, detail: str = "") -> None:
    """Note one SDK call (no-op unless ``KINORAY_COMPAT_OUT`` is set)."""
    target = os.environ.get("KINORAY_COMPAT_OUT")
    if not target:
        return
    line = json.dumps({"sdk": sdk, "operation": operation, "ok": ok, "detail": detail[:200]})
    with _lock, open(target, "a", encoding="utf-8") as out:
        out.write(line + "\n")


def mux_python_client(url: str, auth: tuple[str, str]) -> Any:
    """A ``mux_python.ApiClient`` on ``url`` with an access token, recording each SDK method call."""
    import mux_python as mux

    class Recording(mux.ApiClient):  # type: ignore[misc]
        def call_api(self, *args: Any, **kwargs: Any) -> Any:
            caller = next((frame.function for frame in inspect.stack()[1:4]
                           if not frame.function.startswith("_") and frame.function != "call_api"), "?")
            operation = caller.removesuffix("_with_http_info")
            try:
                result = super().call_api(*args, **kwargs)
            except Exception as error:
                status = getattr(error, "status", "")
                record("mux-python 5.1.2", operation, False, f"{type(error).__name__} {status}".strip())
                raise
            record("mux-python 5.1.2", operation, True)
            return result

    configuration = mux.Configuration(host=url)
    configuration.username, configuration.password = auth
    return Recording(configuration)


def table_rows(lines: list[str]) -> list[tuple[str, str, str]]:
    """(operation, SDK, result) per distinct call: ``works`` if a call of it worked (the tests also make calls
    that must be refused, such as a bad input), else its first failure."""
    seen: dict[tuple[str, str], str] = {}
    for line in lines:
        item = json.loads(line)
        key = (item["operation"], item["sdk"])
        if item["ok"]:
            seen[key] = "works"
        elif key not in seen:
            seen[key] = f"fails: {item['detail']}".replace("|", "/")
    return sorted((operation, sdk, result) for (operation, sdk), result in seen.items())


def main(path: str) -> None:
    rows = table_rows(Path(path).read_text(encoding="utf-8").splitlines())
    table = "\n".join(["| operation | SDK | result |", "|---|---|---|",
                       *(f"| `{operation}` | {sdk} | {result} |" for operation, sdk, result in rows)])
    text = API_DOC.read_text(encoding="utf-8")
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    API_DOC.write_text(f"{before}{START}\n{table}\n{END}{after}", encoding="utf-8")
    sys.stdout.write(f"{len(rows)} rows written to {API_DOC}\n")


if __name__ == "__main__":
    main(sys.argv[1])
