"""The suite's one CI guard and the one way a test asks for Caffe.

Outside CI a test that needs the project's Caffe (or PyTorch) and cannot have it is
skipped. Under CI (the environment variable ``CI`` set to anything but ``""``, ``0``,
``false`` or ``no``; ``.ci/run`` sets ``CI=true``) such a skip is a failure: CI builds
everything through ``scripts/setup.sh``, so a missing engine there is a broken set-up, not a
reason to report green. "Needs" means: marked ``caffe`` or ``torch`` (a test that uses the
``caffe``, ``caffe_bin`` or ``caffe_install`` fixture is marked ``caffe`` automatically), or skipped by
``pytest.importorskip`` of caffe or torch.

Tests marked ``cuda`` need a CUDA device: where there is none they are deselected (not run,
and not counted as skipped or passed), and the summary says how many; on a GPU machine
``pytest -m cuda`` runs them.

Tests do not test for CI themselves; they skip (``pytest.skip``, a fixture below,
``pytest.importorskip``) and this file decides.
"""

from __future__ import annotations

import os
from types import ModuleType

import pytest

# Markers whose tests must run under CI; a skip of one fails the run there.
CI_REQUIRED = ("caffe", "torch")
# Fixtures that imply the caffe marker.
CAFFE_FIXTURES = ("caffe", "caffe_bin", "caffe_install")


def in_ci() -> bool:
    """True when the CI environment variable is set to something truthy."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


_NO_CUDA: list[str] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if any(f in getattr(item, "fixturenames", ()) for f in CAFFE_FIXTURES):
            item.add_marker(pytest.mark.caffe)
    cuda = [item for item in items if item.get_closest_marker("cuda") is not None]
    if cuda and not _cuda_available():
        config.hook.pytest_deselected(items=cuda)
        items[:] = [item for item in items if item.get_closest_marker("cuda") is None]
        _NO_CUDA[:] = [item.nodeid for item in cuda]


def pytest_terminal_summary(terminalreporter) -> None:
    if _NO_CUDA:
        terminalreporter.write_line(
            f"{len(_NO_CUDA)} tests marked cuda deselected: no CUDA device here (on a GPU machine: "
            "pytest -m cuda)"
        )


def _required(item: pytest.Item, reason: str) -> str | None:
    """Why ``item`` may not skip under CI, or None when it may."""
    for name in CI_REQUIRED:
        if item.get_closest_marker(name) is not None:
            return f"it is marked {name}"
        if f"could not import '{name}" in reason:
            return f"it needs {name}"
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    rep = outcome.get_result()
    if not (rep.skipped and in_ci()) or hasattr(rep, "wasxfail"):
        return
    reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
    why = _required(item, reason)
    if why is not None:
        rep.outcome = "failed"
        rep.longrepr = f"skipped under CI (CI={os.environ.get('CI')!r}), but {why}: {reason}"


NO_CAFFE = "Caffe is not built (run `bash scripts/setup.sh` or set CAFFE_ROOT)"


@pytest.fixture(scope="session")
def caffe_install():
    """The Caffe in use (:class:`model_libs.caffe_env.CaffeInstall`); skips without one."""
    from model_libs.caffe_env import find_caffe

    inst = find_caffe(required=False)
    if inst is None:
        pytest.skip(NO_CAFFE)
    return inst


@pytest.fixture(scope="session")
def caffe(caffe_install) -> ModuleType:
    """pycaffe of the Caffe in use, in CPU mode; skips without one (fails under CI)."""
    from model_libs.caffe_env import import_caffe

    module = import_caffe()
    module.set_mode_cpu()
    return module


@pytest.fixture(scope="session")
def caffe_bin(caffe_install) -> str:
    """The ``caffe`` tool of the Caffe in use; skips without one (fails under CI)."""
    from model_libs.caffe_env import caffe_binary

    return str(caffe_binary())
