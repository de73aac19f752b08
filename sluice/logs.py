"""Log output of `sluice bridge`, `serve` and `focus`: text lines (the default) or one JSON object per line.

JSON (`--log-format json`, or `[logging] format = "json"` in the settings file; the flag wins): each line is
`{"time", "level", "logger", "message"}`, plus `conference` (the meeting-id), `endpoint` (the Colibri2
endpoint id, which is the participant's MUC nick) and `room` (the MUC room's JID) on the lines about them
(the `extra` the bridge's `log_ids` and the focus's `signaling.focus.logids` give), and `exception` with the
traceback when there is one. The ids come from remote parties (nicks, room names): JSON escapes them, so a
crafted nick cannot forge a line or a field.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TextIO

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Record attributes that become fields of a JSON line when a log call set them (`extra`).
ID_FIELDS = ("conference", "endpoint", "room")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ID_FIELDS:
            value = getattr(record, name, None)
            if isinstance(value, str):
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def log_format(doc: Mapping[str, object], flag: str | None) -> str:
    """The format: the flag if given, else the file's `[logging] format`, else text. Raises ValueError."""
    table = doc.get("logging", {})
    if not isinstance(table, Mapping):
        raise ValueError("logging must be a table")
    unknown = set(table) - {"format"}
    if unknown:
        raise ValueError(f"unknown key logging.{sorted(unknown)[0]}")
    chosen = flag if flag is not None else table.get("format", "text")
    if chosen not in FORMATS:
        raise ValueError(f"bad value for logging.format: {chosen!r} (text or json)")
    return str(chosen)


def setup_logging(fmt: str, stream: TextIO | None = None) -> None:
    """The root logger at INFO, writing `fmt` lines to `stream` (stderr)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    # Python's warnings too go through the handler, as log lines of the chosen format.
    logging.captureWarnings(True)
