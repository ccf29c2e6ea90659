"""One command-line convention: one parser builder, one error path, every command on it.

Bad input ends any command with exactly one ``error:`` line on stderr and exit status 2,
never a traceback; argparse's usage errors look the same; ``--help`` works everywhere.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from model_libs.__main__ import COMMANDS
from model_libs.__main__ import main as cli_main
from model_libs.cli import describe, emit_error, guarded, make_parser, run
from model_libs.errors import ModelLibsError

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "examples").rglob("*.py")) + sorted((ROOT / "bench").glob("*.py"))


def _python(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, env=env)


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


# --- the helpers themselves ---------------------------------------------------------------


def test_guarded_maps_user_errors_to_one_line_and_status_2(capsys):
    def missing():
        open("/nonexistent/dir/x.txt")

    assert guarded(missing) == 2
    assert _one_error_line(capsys.readouterr().err) == (
        "error: /nonexistent/dir/x.txt: No such file or directory"
    )

    def bad_text():
        b"\xff\xfe".decode("utf-8")

    assert guarded(bad_text) == 2
    assert "not valid utf-8 text" in _one_error_line(capsys.readouterr().err)

    def raises():
        raise ModelLibsError("f.prototxt: line 2\nsecond line")

    assert guarded(raises) == 2
    assert _one_error_line(capsys.readouterr().err) == "error: f.prototxt: line 2; second line"
    assert guarded(lambda: 1) == 1 and guarded(lambda: None) == 0


def test_bugs_keep_their_traceback():
    with pytest.raises(ZeroDivisionError):
        guarded(lambda: 1 / 0)


def test_error_line_survives_names_that_are_not_utf8(capsys):
    name = os.fsdecode(b"/tmp/bad\xffname")  # a surrogate escape, as argv delivers it
    emit_error(describe(FileNotFoundError(2, "No such file or directory", name)))
    line = _one_error_line(capsys.readouterr().err)
    assert line == "error: /tmp/bad\\udcffname: No such file or directory"


def test_usage_errors_are_one_error_line_with_status_2(capsys):
    def parser():
        ap = make_parser("prog", "test")
        sub = ap.add_subparsers(dest="what", required=True)
        sub.add_parser("a").add_argument("--n", type=int, required=True)
        return ap

    for argv, message in (
        (["a"], "error: prog a: the following arguments are required: --n (see --help)"),
        (["a", "--n", "x"], "error: prog a: argument --n: invalid int value: 'x' (see --help)"),
        (["b"], "error: prog: argument what: invalid choice: 'b' (choose from "),  # quoting varies
    ):
        with pytest.raises(SystemExit) as exc:
            run(argv, parser, lambda args: 0)
        assert exc.value.code == 2
        line = _one_error_line(capsys.readouterr().err)
        assert line == message or (message.endswith("from ") and line.startswith(message))
    assert run(["a", "--n", "3"], parser, lambda args: args.n) == 3


# --- every command ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help_and_one_line_usage_errors(name, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main([name, "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m model_libs {name}")
    with pytest.raises(SystemExit) as exc:
        cli_main([name, "--no-such-option"])
    assert exc.value.code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: python -m model_libs {name}")  # a required argument may come first


def test_unknown_command(capsys):
    assert cli_main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in _one_error_line(capsys.readouterr().err)
    assert cli_main([]) == 0
    listed = capsys.readouterr().out
    assert all(f"  {name}" in listed for name in COMMANDS)


def test_missing_inputs_end_every_kind_of_command_the_same_way(tmp_path):
    """Through the real entry point (a subprocess): status 2, one line naming the file."""
    missing = tmp_path / "absent"
    cases = [
        ["summary", str(missing / "net.prototxt")],
        ["plot", str(missing / "train.log")],
        ["weights", "show", str(missing / "w.caffemodel")],
        ["inspect", str(missing / "lmdb")],
        ["eval", "compare", str(missing / "a.json"), str(missing / "b.json")],
        ["score", "--model", "DSOD300_smallest", "--weights", str(missing / "w.caffemodel")],
    ]
    for argv in cases:
        proc = _python("-m", "model_libs", *argv, cwd=tmp_path)
        assert proc.returncode == 2, (argv, proc.stdout, proc.stderr)
        line = _one_error_line(proc.stderr)
        assert str(missing) in line, (argv, line)


def test_job_command_writes_what_the_recipe_script_dry_run_writes(tmp_path):
    args = ["--model", "DSOD300_lite", "--gpus", "0,1", "--data-root", "/data"]
    a, b = tmp_path / "a", tmp_path / "b"
    proc = _python(
        "-m", "model_libs", "job", "--dataset", "VOC0712Plus", *args, "--out", str(a), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    script = ROOT / "examples" / "dsod" / "DSOD300_pascal++.py"
    proc = _python(str(script), *args, "--dry-run", "--out", str(b), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()) and len(names) == 5
    for name in names:
        assert (a / name).read_text().replace(str(a), "OUT") == (b / name).read_text().replace(str(b), "OUT")


# --- one way, everywhere ------------------------------------------------------------------


def _python_sources() -> list[Path]:
    return sorted((ROOT / "model_libs").rglob("*.py")) + SCRIPTS


def test_one_parser_builder_and_one_error_printer():
    """Parsers come from make_parser; 'error:' lines come from emit_error (model_libs.cli)."""
    offenders = []
    for path in _python_sources():
        if path == ROOT / "model_libs" / "cli.py" or path.name == "caffe_pb2.py":
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                f = node.func
                if isinstance(f, ast.Attribute) and f.attr == "ArgumentParser":
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: argparse.ArgumentParser")
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if node.value.startswith("error:"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: prints 'error:' itself")
            if isinstance(node, ast.JoinedStr) and node.values:
                first = node.values[0]
                if isinstance(first, ast.Constant) and str(first.value).startswith("error:"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: prints 'error:' itself")
    assert offenders == []


def test_scripts_do_not_edit_sys_path():
    edits = [str(p.relative_to(ROOT)) for p in SCRIPTS if "sys.path" in p.read_text()]
    assert edits == []


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_scripts_run_from_elsewhere_with_the_installed_package(script, tmp_path):
    """From another folder, importing model_libs as installed (no checkout on sys.path)."""
    proc = _python(str(script), "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: ")
    proc = _python(str(script), "--no-such-option", cwd=tmp_path)
    assert proc.returncode == 2
    _one_error_line(proc.stderr)
