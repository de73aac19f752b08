"""sluice/logs.py: JSON log lines with the ids, the format's precedence, and a bad setting refused."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from sluice.cli import main
from sluice.logs import log_format, setup_logging


@pytest.fixture
def restore_root() -> object:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def test_json_lines_carry_ids_and_escape_remote_text(restore_root: object) -> None:
    out = io.StringIO()
    setup_logging("json", out)
    log = logging.getLogger("signaling.focus.rooms")
    # A nick is remote input: a newline or a quote in it must not end the line or forge a field.
    nick = 'evil\n{"level": "CRITICAL"}'
    log.info("focus: %s joined %s", nick, "r@conference.x", extra={"room": "r@conference.x",
             "conference": "m-1", "endpoint": nick})  # fmt: skip
    log.info("no ids here")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("bridge.http").exception("failed", extra={"conference": "m-1"})
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    first, second, third = (json.loads(line) for line in lines)
    assert first["endpoint"] == nick and first["conference"] == "m-1" and first["room"] == "r@conference.x"
    assert first["level"] == "INFO" and first["logger"] == "signaling.focus.rooms"
    assert first["message"] == f"focus: {nick} joined r@conference.x"
    assert "conference" not in second and second["message"] == "no ids here"
    assert third["level"] == "ERROR" and "ValueError: boom" in third["exception"]


def test_the_flag_wins_over_the_file_and_bad_values_are_refused() -> None:
    assert log_format({}, None) == "text"
    assert log_format({"logging": {"format": "json"}}, None) == "json"
    assert log_format({"logging": {"format": "json"}}, "text") == "text"
    for doc in ({"logging": {"format": "xml"}}, {"logging": {"colour": True}}, {"logging": "json"}):
        with pytest.raises(ValueError, match="logging"):
            log_format(doc, None)


def test_the_command_line_refuses_a_bad_logging_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_root: object
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[logging]\nformat = "xml"\n')
    assert main(["serve", "--config", str(config)]) == 2
    assert "logging.format" in capsys.readouterr().err
