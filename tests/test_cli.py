"""Command-line parsing that needs no server: moments, start positions, data."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

import pytest

from eventbus.cli import build_parser
from eventbus.commands.client_commands import UsageError, _read_data, _start, parse_moment


def test_parse_moment_accepts_rfc3339_and_delays() -> None:
    assert parse_moment("2026-12-01T10:00:00Z", "--not-before") == datetime(2026, 12, 1, 10, tzinfo=UTC)
    before = datetime.now(UTC)
    for text, delay in (("30s", 30), ("+5m", 300), ("2h", 7200), ("1d", 86400), ("250ms", 0.25)):
        moment = parse_moment(text, "--not-before")
        assert before + timedelta(seconds=delay) <= moment <= datetime.now(UTC) + timedelta(seconds=delay)
    with pytest.raises(UsageError, match="--not-before"):
        parse_moment("tomorrow", "--not-before")


def test_start_positions() -> None:
    assert _start("latest") == "latest"
    assert _start("earliest") == "earliest"
    assert _start("42") == 42
    assert _start("2026-01-01T00:00:00Z") == datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(UsageError, match="--from"):
        _start("soon")


def test_data_is_json_unless_a_content_type_says_otherwise() -> None:
    def namespace(data: str | None, content_type: str | None = None) -> argparse.Namespace:
        return argparse.Namespace(data=data, content_type=content_type)

    assert _read_data(namespace('{"a": [1, 2]}')) == {"a": [1, 2]}
    assert _read_data(namespace("plain", "text/plain")) == b"plain"
    assert _read_data(namespace(None)) is None
    with pytest.raises(UsageError, match="not valid JSON"):
        _read_data(namespace("{nope"))


def test_every_documented_command_parses() -> None:
    parser = build_parser()
    parser.parse_args(["serve", "--store", "sqlite:///x.db", "--grpc-listen", "127.0.0.1:0", "--log-format", "json"])
    parser.parse_args(["publish", "--type", "a.b", "--source", "/s", "--not-before", "30s", "--json"])
    parser.parse_args(["publish", "--batch", "-"])
    parser.parse_args(["tail", "--group", "g", "--pattern", "a.*", "--pattern", "b.**", "--from", "7", "--count", "3"])
    parser.parse_args(["groups", "list"])
    parser.parse_args(["groups", "show", "g"])
    parser.parse_args(["groups", "seek", "g", "--to", "12"])
    parser.parse_args(["groups", "rm", "g"])
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["groups", "seek", "g"])
    assert exc.value.code == 2
