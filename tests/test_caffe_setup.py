"""The Caffe set-up step's failure handling and caching (no compiler run needed).

A missing system package, a wrong sdist hash, a patch that does not apply or a failed
compile each stop ``caffe/build.py`` with one ``error:`` line and exit status 1, and never
leave something that passes for a finished install.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from model_libs import caffe_env

REPO = Path(__file__).resolve().parents[1]


def load_build():
    """caffe/build.py as a module (the folder is not a package, and 'caffe' is pycaffe)."""
    spec = importlib.util.spec_from_file_location("model_libs_caffe_build", REPO / "caffe" / "build.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def build(tmp_path, monkeypatch):
    """build.py with its build folder moved into tmp_path."""
    mod = load_build()
    monkeypatch.setattr(mod, "BUILD_ROOT", tmp_path / "build")
    monkeypatch.setattr(mod, "INSTALL", tmp_path / "build" / "install")
    return mod


def test_pinned_source_is_a_sha256():
    src = json.loads((REPO / "caffe" / "source.json").read_text())
    assert src["name"] == "brocolli-caffe" and src["version"] == "9.0.2"
    assert len(src["sha256"]) == 64 and int(src["sha256"], 16) >= 0


def test_missing_system_package_is_named(build, monkeypatch, capsys):
    monkeypatch.setattr(
        build, "SYSTEM_FILES", [*build.SYSTEM_FILES, ("/nonexistent/include/foo.h", "libfoo-dev")]
    )
    monkeypatch.setattr(build, "cache_key", lambda src: "k")
    rc = build.main(["--jobs", "1"])
    err = capsys.readouterr().err
    assert rc == 1
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "libfoo-dev" in lines[0]
    assert not (build.INSTALL / build.MARKER).exists()


def test_wrong_cached_hash_is_refetched_and_wrong_pin_is_refused(build, monkeypatch, capsys):
    src = build.load_source()
    # a corrupt file in the download cache is not trusted
    dl = build.BUILD_ROOT / "downloads"
    dl.mkdir(parents=True)
    bad = dl / f"{src['name']}-{src['version']}.tar.gz"
    bad.write_bytes(b"not the sdist")
    wrong = dict(src, sha256=hashlib.sha256(b"something else").hexdigest())
    with pytest.raises(build.BuildError, match=r"does not match the pinned"):
        build.fetch_sdist(wrong)
    assert not bad.exists()  # the corrupt file was dropped, nothing replaced it


def test_patch_that_does_not_apply_stops_the_build(build, monkeypatch, tmp_path, capsys):
    import tarfile

    src = {"name": "fake", "version": "1", "sha256": "0" * 64, "top_dir": "fake-1"}
    top = tmp_path / "fake-1"
    (top / "src" / "caffe" / "proto").mkdir(parents=True)
    (top / "a.txt").write_text("hello\n")
    sdist = tmp_path / "fake-1.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        tf.add(top, arcname="fake-1")
    bad_patch = tmp_path / "0001-bad.patch"
    bad_patch.write_text("--- a/a.txt\n+++ b/a.txt\n@@ -1 +1 @@\n-goodbye\n+bye\n")
    monkeypatch.setattr(build, "patch_files", lambda: [bad_patch])
    build.BUILD_ROOT.mkdir(parents=True)
    with pytest.raises(build.BuildError, match=r"0001-bad\.patch does not apply"):
        build.prepare_tree(sdist, src, "key1")
    # no prepared tree is left behind to be taken for a good one
    assert not (build.BUILD_ROOT / "src" / ".model_libs_prepared").exists()


def test_failed_compile_reports_and_leaves_no_install(build, tmp_path, capsys):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "Makefile").write_text("all:\n\t@echo 'x.cpp:1: error: broken'; false\npy:\n")
    build.BUILD_ROOT.mkdir(parents=True)
    with pytest.raises(build.BuildError, match="compiling Caffe failed"):
        build.run_make(tree, 1)
    assert "x.cpp:1: error: broken" in capsys.readouterr().err
    assert not build.INSTALL.exists()


def test_build_script_exits_1_with_one_error_line(tmp_path):
    # an unknown interpreter version path: run with a missing proto via a copy of the script
    script_dir = tmp_path / "caffe"
    script_dir.mkdir()
    for name in ("build.py", "source.json", "prune.txt", "Makefile.config.in"):
        (script_dir / name).write_bytes((REPO / "caffe" / name).read_bytes())
    res = subprocess.run([sys.executable, str(script_dir / "build.py")], capture_output=True, text=True)
    assert res.returncode == 1
    errs = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errs) == 1 and "caffe.proto" in errs[0]


def test_unfinished_install_is_not_found(tmp_path, monkeypatch):
    inst = tmp_path / "install"
    (inst / "bin").mkdir(parents=True)
    (inst / "bin" / "caffe").write_text("#!/bin/sh\n")
    (inst / "python" / "caffe").mkdir(parents=True)
    monkeypatch.delenv("CAFFE_ROOT", raising=False)
    monkeypatch.setattr(caffe_env, "PROJECT_INSTALL", inst)
    assert caffe_env._project_install(inst) is None  # no BUILD_INFO.json marker
    (inst / "BUILD_INFO.json").write_text('{"key": "k", "cpu_only": true}')
    found = caffe_env._project_install(inst)
    assert found is not None and found.gpu is False


def test_caffe_root_points_at_a_user_build(tmp_path, monkeypatch):
    root = tmp_path / "ssd"
    (root / "build" / "tools").mkdir(parents=True)
    (root / "build" / "tools" / "caffe").write_text("")
    (root / "build" / "lib").mkdir()
    (root / "build" / "lib" / "libcaffe.so").write_bytes(b"\x7fELF ... libcudart.so.11 ...")
    (root / "python" / "caffe").mkdir(parents=True)
    (root / "python" / "caffe" / "_caffe.so").write_bytes(b"")
    monkeypatch.setenv("CAFFE_ROOT", str(root))
    inst = caffe_env.find_caffe()
    assert inst.origin == "CAFFE_ROOT" and inst.gpu is True
    assert inst.binary == root / "build" / "tools" / "caffe"
    assert inst.python_dir == root / "python"
    monkeypatch.setenv("CAFFE_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(caffe_env.ModelLibsError, match="no such folder"):
        caffe_env.find_caffe()


def test_info_without_any_caffe_says_how_to_get_one(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CAFFE_ROOT", raising=False)
    monkeypatch.setattr(caffe_env, "PROJECT_INSTALL", tmp_path / "none")
    monkeypatch.setattr(caffe_env, "_project_install", lambda root=tmp_path / "none": None)
    assert caffe_env.main([]) == 1
    out = capsys.readouterr().out
    assert "NOT FOUND" in out and "scripts/setup.sh" in out
    assert "opencv dnn:" in out
