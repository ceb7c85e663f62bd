"""CLI output: a readable table on a terminal, one JSON object per line with `--json` or when piped."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from eventbus.model import format_rfc3339


def wants_json(flag: bool) -> bool:
    return flag or not sys.stdout.isatty()


def plain(value: Any) -> Any:
    """JSON-friendly: timestamps as RFC 3339, durations as seconds, tuples as lists."""
    if isinstance(value, datetime):
        return format_rfc3339(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(plain(obj), ensure_ascii=False, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def print_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str], *, as_json: bool) -> None:
    if as_json:
        for row in rows:
            print_json(row)
        return
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    sys.stdout.write("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip() + "\n")
    for row_cells in cells:
        sys.stdout.write("  ".join(v.ljust(w) for v, w in zip(row_cells, widths, strict=True)).rstrip() + "\n")
    sys.stdout.flush()


def print_record(record: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print_json(record)
        return
    width = max(len(k) for k in record)
    for key, value in record.items():
        sys.stdout.write(f"{key.ljust(width)}  {_cell(value)}\n")
    sys.stdout.flush()


def _cell(value: Any) -> str:
    value = plain(value)
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
