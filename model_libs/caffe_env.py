"""Which Caffe the toolkit uses, and how to reach it.

Two kinds of installation are recognised, in this order:

1. ``CAFFE_ROOT`` set in the environment: a user's own SSD Caffe checkout built with its
   Makefile or CMake (``$CAFFE_ROOT/build/tools/caffe`` and ``$CAFFE_ROOT/python``), e.g.
   upstream weiliu89/caffe ``ssd`` with CUDA and NCCL for multi-GPU training.
2. Otherwise the project's own build made by ``scripts/setup.sh`` (CPU-only, built from the
   pinned brocolli-caffe sdist with the project's patches and ``model_libs/proto/caffe.proto``):
   ``build/caffe/install`` of the source checkout the package runs from, else the build linked
   into the running virtualenv (``<venv>/bin/caffe``, which ``caffe/build.py`` links), so an
   installed (non-editable) package finds it too. It counts only once its
   ``BUILD_INFO.json`` marker exists, which the build writes last.

``python -m model_libs info`` prints what was found and whether OpenCV's DNN module (the
other way to run deploy nets) is available.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from .errors import ModelLibsError


def _checkout_install() -> Path | None:
    """``build/caffe/install`` of the source checkout holding this package, if it is one."""
    checkout = Path(__file__).resolve().parents[1]
    return checkout / "build" / "caffe" / "install" if (checkout / "caffe" / "build.py").is_file() else None


def _venv_install() -> Path | None:
    """The project build that ``caffe/build.py`` linked into the running virtualenv."""
    link = Path(sys.prefix) / "bin" / "caffe"
    return link.resolve().parent.parent if link.is_symlink() else None


def _default_install() -> Path | None:
    candidates = [p for p in (_checkout_install(), _venv_install()) if p is not None]
    return next((p for p in candidates if (p / "BUILD_INFO.json").is_file()), next(iter(candidates), None))


PROJECT_INSTALL = _default_install()
MARKER = "BUILD_INFO.json"
SETUP_HINT = "run `bash scripts/setup.sh` to build it, or set CAFFE_ROOT to your own SSD Caffe"


@dataclass
class CaffeInstall:
    """One Caffe installation: where its tool, library and pycaffe live."""

    origin: str
    """``"CAFFE_ROOT"`` (a user's build) or ``"project"`` (built by scripts/setup.sh)."""
    root: Path
    binary: Path | None
    python_dir: Path | None
    library: Path | None
    gpu: bool | None
    """True if linked against CUDA, False if CPU-only, None if unknown."""
    build_info: dict = field(default_factory=dict)

    def describe(self) -> str:
        """How it was built, in words."""
        if self.origin == "project":
            info = self.build_info
            return (
                f"project build of {info.get('source', '?')} + {len(info.get('patches', []))} "
                f"project patches, schema {info.get('schema', '?')}, built "
                f"{info.get('built_at', '?')} by {info.get('built_by', '?')}"
            )
        return f"user build under CAFFE_ROOT={self.root}"


def _links_cuda(lib: Path | None) -> bool | None:
    """Whether a shared library names libcudart among its dependencies (None: unknown)."""
    if lib is None or not lib.is_file():
        return None
    try:
        data = lib.read_bytes()
    except OSError:
        return None
    return b"libcudart" in data or b"libcublas" in data


def _first(paths: list[Path]) -> Path | None:
    return next((p for p in paths if p.exists()), None)


def _user_install(root: Path) -> CaffeInstall:
    if not root.is_dir():
        raise ModelLibsError(f"CAFFE_ROOT={root}: no such folder")
    binary = _first(
        [
            root / "build" / "tools" / "caffe",
            root / "build" / "tools" / "caffe.bin",
            root / "bin" / "caffe",
            root / ".build_release" / "tools" / "caffe.bin",
        ]
    )
    python_dir = _first([root / "python" / "caffe" / "_caffe.so"])
    library = _first(
        [
            root / "build" / "lib" / "libcaffe.so",
            root / "lib" / "libcaffe.so",
            root / ".build_release" / "lib" / "libcaffe.so",
        ]
    )
    if binary is None and python_dir is None:
        raise ModelLibsError(
            f"CAFFE_ROOT={root}: no built Caffe there (expected build/tools/caffe or "
            "python/caffe/_caffe.so; run `make all pycaffe` in it)"
        )
    return CaffeInstall(
        origin="CAFFE_ROOT",
        root=root,
        binary=binary,
        python_dir=python_dir.parent.parent if python_dir else None,
        library=library,
        gpu=_links_cuda(library),
    )


def _project_install(root: Path | None = None) -> CaffeInstall | None:
    root = root or PROJECT_INSTALL
    if root is None:
        return None
    try:
        info = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None  # not built, or a build that never finished
    lib = _first(sorted((root / "lib").glob("libcaffe.so*")))
    return CaffeInstall(
        origin="project",
        root=root,
        binary=root / "bin" / "caffe",
        python_dir=root / "python",
        library=lib,
        gpu=not info.get("cpu_only", True),
        build_info=info,
    )


def find_caffe(required: bool = True) -> CaffeInstall | None:
    """The Caffe to use: ``CAFFE_ROOT`` if set, else the project's build.

    Raises :class:`ModelLibsError` when none is found and ``required``; else returns None.
    """
    env = os.environ.get("CAFFE_ROOT", "").strip()
    if env:
        return _user_install(Path(env).expanduser().resolve())
    inst = _project_install()
    if inst is None and required:
        where = PROJECT_INSTALL or "this checkout or virtualenv"
        raise ModelLibsError(
            f"no Caffe found (CAFFE_ROOT is not set and {where} holds no finished build); {SETUP_HINT}"
        )
    return inst


def caffe_binary() -> Path:
    """Path of the ``caffe`` command-line tool of the Caffe in use."""
    inst = find_caffe()
    assert inst is not None
    if inst.binary is None or not inst.binary.exists():
        raise ModelLibsError(f"{inst.root}: has no caffe tool; {SETUP_HINT}")
    return inst.binary


def import_caffe() -> ModuleType:
    """Import pycaffe of the Caffe in use (putting it first on ``sys.path``) and return it."""
    inst = find_caffe()
    assert inst is not None
    if inst.python_dir is None:
        raise ModelLibsError(
            f"{inst.root}: has no pycaffe (python/caffe/_caffe.so); "
            f"build it with `make pycaffe`, or {SETUP_HINT}"
        )
    pdir = str(inst.python_dir)
    mod = sys.modules.get("caffe")
    if mod is not None:
        loaded = Path(getattr(mod, "__file__", "") or "").resolve()
        if inst.python_dir.resolve() in loaded.parents:
            return mod
        raise ModelLibsError(
            f"a different pycaffe is already imported ({loaded}); expected the one under {pdir}"
        )
    if pdir in sys.path:
        sys.path.remove(pdir)
    sys.path.insert(0, pdir)
    try:
        return importlib.import_module("caffe")
    except ImportError as exc:
        raise ModelLibsError(f"pycaffe under {pdir} does not import: {exc}") from None


def opencv_dnn() -> str | None:
    """OpenCV version string if ``cv2.dnn`` can read Caffe models, else None."""
    try:
        import cv2
    except ImportError:
        return None
    dnn = getattr(cv2, "dnn", None)
    if dnn is None or not hasattr(dnn, "readNetFromCaffe"):
        return None
    return str(cv2.__version__)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m model_libs info``: which Caffe and OpenCV DNN the toolkit uses."""
    from .cli import PROG, make_parser, run

    return run(
        argv,
        lambda: make_parser(f"{PROG} info", "Which Caffe and OpenCV DNN the toolkit uses."),
        lambda _args: _info(),
    )


def _info() -> int:
    inst = find_caffe(required=False)
    if inst is None:
        where = PROJECT_INSTALL or "this checkout or virtualenv"
        print(f"caffe: NOT FOUND (CAFFE_ROOT not set, no project build under {where}); {SETUP_HINT}")
    else:
        mode = {True: "GPU (CUDA)", False: "CPU-only", None: "unknown"}[inst.gpu]
        print(f"caffe: {inst.origin} at {inst.root}")
        print(f"  tool:     {inst.binary or 'none'}")
        print(f"  pycaffe:  {inst.python_dir or 'none'}")
        print(f"  library:  {inst.library or 'none'}")
        print(f"  mode:     {mode}")
        print(f"  built:    {inst.describe()}")
        if inst.origin == "project" and inst.build_info:
            bi = inst.build_info
            print(
                f"  python:   {bi.get('python')} / numpy {bi.get('numpy')}; OpenCV "
                f"{'on' if bi.get('opencv') else 'off'}, LMDB {'on' if bi.get('lmdb') else 'off'}"
            )
    cv = opencv_dnn()
    print(f"opencv dnn: {'available (OpenCV ' + cv + ')' if cv else 'not available'}")
    return 0 if inst is not None else 1
