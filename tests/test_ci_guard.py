"""conftest.py's CI guard: under CI a Caffe or torch test that skips fails the run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

HERE = Path(__file__).resolve().parent

SUITE = """
import pytest

@pytest.mark.caffe
def test_marked_caffe():
    pytest.skip("no caffe here")

@pytest.fixture
def caffe_bin():  # stands in for conftest's fixture on a machine without Caffe
    pytest.skip("no caffe tool here")

def test_uses_the_caffe_fixture(caffe_bin):
    pass

@pytest.mark.torch
def test_marked_torch():
    pytest.skip("no torch here")

def test_importorskip_torch():
    pytest.importorskip("torch_is_missing_for_this_test")

def test_ordinary_skip():
    pytest.skip("nothing to do with an engine")

@pytest.mark.caffe
def test_marked_caffe_that_runs():
    assert True

@pytest.mark.caffe
@pytest.mark.xfail(reason="expected to fail", strict=True)
def test_xfail():
    assert False
"""


def _run(tmp_path: Path, ci: str | None) -> dict[str, str]:
    """Outcome per test of SUITE run with tests/conftest.py, with CI set to ``ci``."""
    d = tmp_path / f"ci_{ci}"
    d.mkdir()
    shutil.copy(HERE / "conftest.py", d / "conftest.py")
    (d / "test_suite.py").write_text(SUITE)
    (d / "pytest.ini").write_text("[pytest]\nmarkers =\n    caffe: c\n    torch: t\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    report = d / "report.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--junitxml={report}", str(d)],
        cwd=d,
        capture_output=True,
        text=True,
        env=env,
    )
    outcomes = {"<exit>": str(proc.returncode)}
    for case in ElementTree.parse(report).iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        skipped = case.find("skipped")
        if skipped is not None and skipped.get("type") == "pytest.xfail":
            kinds = ["xfail"]
        outcomes[case.get("name")] = "+".join(kinds) or "passed"
    return outcomes


def test_skips_fail_under_ci_only_for_engine_tests(tmp_path):
    outside = _run(tmp_path, None)
    assert outside["test_marked_caffe"] == "skipped"
    assert outside["test_marked_torch"] == "skipped"
    assert outside["test_importorskip_torch"] == "skipped"
    assert outside["test_ordinary_skip"] == "skipped"
    assert outside["test_uses_the_caffe_fixture"] == "skipped"
    assert outside["test_marked_caffe_that_runs"] == "passed"
    assert outside["<exit>"] == "0"

    for value in ("true", "1"):
        under = _run(tmp_path, value)
        assert under["test_marked_caffe"] == "failure", under
        assert under["test_marked_torch"] == "failure", under
        assert under["test_importorskip_torch"] == "failure", under
        assert under["test_ordinary_skip"] == "skipped", under
        assert under["test_marked_caffe_that_runs"] == "passed", under
        assert under["test_xfail"] == "xfail", under
        assert under["test_uses_the_caffe_fixture"] == "error", under  # failed in its set-up
        assert under["<exit>"] == "1", under
    assert _run(tmp_path, "false")["<exit>"] == "0"


@pytest.mark.parametrize(
    "value, expected", [("true", True), ("1", True), ("", False), ("0", False), ("no", False)]
)
def test_in_ci_reads_the_variable(monkeypatch, value, expected):
    from tests.conftest import in_ci

    monkeypatch.setenv("CI", value)
    assert in_ci() is expected
