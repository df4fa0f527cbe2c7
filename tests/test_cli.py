"""The command line as a user meets it: help, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from inscene.cli import app

WORKING_COMMANDS = {"demo", "schema", "verify", "weights"}


def run_cli(*args, check_rc=None):
    proc = subprocess.run(
        [sys.executable, "-m", "inscene", *args], capture_output=True, text=True, timeout=120
    )
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stdout + proc.stderr
    return proc


def test_help_lists_exactly_the_registered_commands():
    import typer.main

    group = typer.main.get_group(app)
    names = set(group.commands)
    assert WORKING_COMMANDS <= names
    out = run_cli("--help", check_rc=0).stdout
    for name in names:
        assert name in out
    for name in names:  # every command has --help with its options
        assert run_cli(name, "--help", check_rc=0).stdout.strip()


def test_schema_prints_json_schema():
    out = run_cli("schema", "Face", check_rc=0).stdout
    schema = json.loads(out)
    assert schema["properties"]["landmarks"]["maxItems"] == 5


def test_bad_input_is_one_line_exit_2_and_debug_shows_traceback(tmp_path):
    proc = run_cli("schema", "NoSuchRecord")
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "NoSuchRecord" in lines[0]
    assert "Traceback" not in proc.stderr
    proc = run_cli("--debug", "schema", "NoSuchRecord")
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    proc = run_cli("verify", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "not a folder" in proc.stderr


def test_unknown_option_is_usage_error_exit_2():
    assert run_cli("demo", "--no-such-option").returncode == 2


@pytest.mark.parametrize("args, named", [(("--cluster", "foo"), "--cluster"), (("--workers", "0"), "--workers")])
def test_bad_cluster_option_names_the_option_exit_2(args, named):
    from typer.testing import CliRunner

    res = CliRunner().invoke(app, ["demo", *args])
    assert res.exit_code == 2
    assert named in res.output and "ValidationError" not in res.output and "pydantic.dev" not in res.output


def test_version():
    assert run_cli("--version", check_rc=0).stdout.startswith("inscene ")


@pytest.mark.parametrize("entry", [["-m", "inscene"]])
def test_module_entry_point(entry):
    proc = subprocess.run([sys.executable, *entry, "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "demo" in proc.stdout
