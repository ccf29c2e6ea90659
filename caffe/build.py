"""Build the project's SSD Caffe (libcaffe, pycaffe, the ``caffe`` tool) from the pinned sdist.

Usage: ``python caffe/build.py [--jobs N] [--force] [--venv PATH]`` (``scripts/setup.sh`` runs it
with the project's ``.venv`` python). Steps:

1. Work out a cache key from everything that decides the result: the pinned sdist hash, this
   project's patches, its schema ``model_libs/proto/caffe.proto``, the pruning list, the build
   configuration, this script, and the Python/NumPy versions pycaffe is compiled against.
2. If ``build/caffe/install/BUILD_INFO.json`` exists with that key, nothing is done (cached).
3. Otherwise: check the system headers/libraries, fetch the sdist through pip with its
   sha256 pinned (``--require-hashes``) and check the hash again, unpack it, remove the
   sources the engine does not use (``caffe/prune.txt``), put the project's ``caffe.proto``
   in place of the fork's, apply ``caffe/patches/*.patch`` in order, write ``Makefile.config``,
   and run ``make all py`` (CPU-only, OpenCV and LMDB on).
4. Install into a temporary folder, rename it to ``build/caffe/install`` and write
   ``BUILD_INFO.json`` last; an interrupted or failed build never leaves a tree that looks
   finished.
5. Link the result into the virtualenv: a ``.pth`` file so ``import caffe`` works, and
   ``<venv>/bin/caffe``.

Every failure ends with one ``error:`` line that says what went wrong (the toolkit's
:func:`model_libs.cli.emit_error`) and exit status 1: a failed build, not a bad argument.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from model_libs.cli import emit_error, make_parser

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PROTO = REPO / "model_libs" / "proto" / "caffe.proto"
BUILD_ROOT = REPO / "build" / "caffe"
INSTALL = BUILD_ROOT / "install"
MARKER = "BUILD_INFO.json"

# header or library -> Debian package that provides it (checked before compiling so a
# missing package is named, not discovered as a compiler error 3 minutes in).
SYSTEM_FILES: list[tuple[str, str]] = [
    ("/usr/bin/g++", "g++ (build-essential)"),
    ("/usr/bin/make", "make (build-essential)"),
    ("/usr/bin/protoc", "protobuf-compiler"),
    ("/usr/bin/patch", "patch"),
    ("/usr/include/google/protobuf/message.h", "libprotobuf-dev"),
    ("/usr/include/glog/logging.h", "libgoogle-glog-dev"),
    ("/usr/include/gflags/gflags.h", "libgflags-dev"),
    ("/usr/include/hdf5/serial/hdf5.h", "libhdf5-dev"),
    ("/usr/include/lmdb.h", "liblmdb-dev"),
    ("/usr/include/opencv4/opencv2/core.hpp", "libopencv-dev"),
    ("/usr/include/x86_64-linux-gnu/openblas-pthread/cblas.h", "libopenblas-dev"),
    ("/usr/include/boost/thread.hpp", "libboost-thread-dev"),
    ("/usr/include/boost/filesystem.hpp", "libboost-filesystem-dev"),
    ("/usr/include/boost/regex.hpp", "libboost-regex-dev"),
    ("/usr/include/boost/python.hpp", "libboost-python-dev"),
    ("/usr/include/python3.11/Python.h", "python3-dev"),
    ("/usr/lib/x86_64-linux-gnu/libboost_python311.so", "libboost-python-dev"),
    ("/usr/lib/x86_64-linux-gnu/libboost_system.so", "libboost-system-dev"),
]


class BuildError(Exception):
    """A build step failed; the message is the one line the user sees."""


def log(msg: str) -> None:
    """Print a progress line."""
    print(f"[caffe-build] {msg}", flush=True)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_source() -> dict:
    """The pinned sdist: name, version, sha256, top folder."""
    return json.loads((HERE / "source.json").read_text())


def patch_files() -> list[Path]:
    """The project's patches, in the order they are applied."""
    return sorted((HERE / "patches").glob("*.patch"))


def numpy_include() -> tuple[str, str]:
    """NumPy's include folder and version, from the Python that runs this script."""
    try:
        import numpy
    except ImportError:
        raise BuildError(
            f"NumPy is not installed in {sys.executable}; run scripts/setup.sh "
            "(it installs the project's dependencies into .venv first)"
        ) from None
    return numpy.get_include(), numpy.__version__


def cache_key(src: dict) -> str:
    """Hash of every input that decides the built engine."""
    if not PROTO.is_file():
        raise BuildError(f"{PROTO}: the project's caffe.proto is missing")
    h = hashlib.sha256()
    h.update(src["sha256"].encode())
    for p in [PROTO, HERE / "prune.txt", HERE / "Makefile.config.in", Path(__file__), *patch_files()]:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    h.update(f"python{sys.version_info.major}.{sys.version_info.minor}".encode())
    h.update(numpy_include()[1].split(".")[0].encode())
    return h.hexdigest()


def read_marker(path: Path) -> dict | None:
    """BUILD_INFO.json of an install folder, or None if absent/unreadable."""
    try:
        return json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None


def check_system() -> None:
    """Fail with the list of missing Debian packages, if any."""
    missing = sorted({pkg for f, pkg in SYSTEM_FILES if not Path(f).exists()})
    if missing:
        raise BuildError(
            "missing system packages: "
            + ", ".join(missing)
            + " (run scripts/setup.sh as root, or apt-get install them)"
        )
    if sys.version_info[:2] != (3, 11):
        raise BuildError(
            f"pycaffe is built against Debian's Python 3.11 / libboost_python311, but this is "
            f"Python {platform.python_version()} ({sys.executable})"
        )


def fetch_sdist(src: dict) -> Path:
    """Download the pinned sdist through pip (hash-checked) into build/caffe/downloads."""
    dl = BUILD_ROOT / "downloads"
    dl.mkdir(parents=True, exist_ok=True)
    target = dl / f"{src['name']}-{src['version']}.tar.gz"
    if target.is_file() and sha256_file(target) == src["sha256"]:
        log(f"sdist {target.name}: cached, sha256 ok")
        return target
    target.unlink(missing_ok=True)
    log(f"fetching {src['name']}=={src['version']} through pip (sha256 pinned)")
    with tempfile.TemporaryDirectory(dir=dl) as tmp:
        req = Path(tmp) / "requirements.txt"
        req.write_text(f"{src['name']}=={src['version']} --hash=sha256:{src['sha256']}\n")
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--no-build-isolation",
            "--require-hashes",
            "-r",
            str(req),
            "-d",
            tmp,
        ]
        res = subprocess.run(cmd, capture_output=True, text=True)
        files = list(Path(tmp).glob("*.tar.gz"))
        if res.returncode != 0 or len(files) != 1:
            tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-15:])
            print(tail, file=sys.stderr)
            if "THESE PACKAGES DO NOT MATCH THE HASHES" in res.stdout + res.stderr:
                raise BuildError(
                    f"{src['name']}=={src['version']}: downloaded file does not match the "
                    f"pinned sha256 {src['sha256']} (caffe/source.json)"
                )
            raise BuildError(f"pip could not download {src['name']}=={src['version']} (see above)")
        got = sha256_file(files[0])
        if got != src["sha256"]:
            raise BuildError(f"{files[0].name}: sha256 {got} does not match the pinned {src['sha256']}")
        os.replace(files[0], target)
    return target


def _patched_paths(patches: list[Path]) -> set[str]:
    """Files (relative to the sdist top) that the given patches change."""
    out = set()
    for p in patches:
        for line in p.read_text(errors="replace").splitlines():
            if line.startswith("+++ b/"):
                out.add(line[6:].split("\t")[0].strip())
    return out


def prepare_tree(sdist: Path, src: dict, key: str) -> Path:
    """Unpack, prune, swap in the project's proto and apply the patches; return the tree.

    Compiled objects of a previous tree are carried over so that make rebuilds only what
    changed: unpacked files keep the sdist's (old) times, the proto keeps its own time, and
    every file a previous or current patch touches is given a fresh time.
    """
    tree = BUILD_ROOT / "src"
    stamp = tree / ".model_libs_prepared"
    try:
        old = json.loads(stamp.read_text())
    except (OSError, ValueError):
        old = {}
    if old.get("key") == key:
        log("source tree: already unpacked and patched for this configuration")
        return tree
    tmp = Path(tempfile.mkdtemp(prefix=".src.", dir=BUILD_ROOT))
    try:
        log(f"unpacking {sdist.name}")
        with tarfile.open(sdist) as tf:
            tf.extractall(tmp, filter="data")
        top = tmp / src["top_dir"]
        if not top.is_dir():
            raise BuildError(f"{sdist.name}: has no top folder {src['top_dir']}")
        shutil.rmtree(top / ".git", ignore_errors=True)
        n = 0
        for line in (HERE / "prune.txt").read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            for p in top.glob(line):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
                n += 1
        log(f"pruned {n} unused sources (caffe/prune.txt)")
        shutil.copy2(PROTO, top / "src" / "caffe" / "proto" / "caffe.proto")
        log("schema: model_libs/proto/caffe.proto replaces the fork's caffe.proto")
        patches = patch_files()
        for p in patches:
            res = subprocess.run(
                ["patch", "-p1", "--forward", "--batch", "-i", str(p)],
                cwd=top,
                capture_output=True,
                text=True,
            )
            if res.returncode != 0:
                print(res.stdout + res.stderr, file=sys.stderr)
                raise BuildError(f"patch {p.name} does not apply to {src['top_dir']}")
            log(f"applied {p.name}")
        patched = _patched_paths(patches)
        carried = False
        # Only a tree built with header tracking (the Makefile patch: -I, so -MMD lists
        # the project's headers) may be reused; otherwise a header change would not
        # rebuild what includes it.
        if (
            old.get("key")
            and old.get("tracks_headers")
            and "Makefile" in patched
            and (tree / ".temp_release").is_dir()
        ):
            for name in (".temp_release", "temp"):
                if (tree / name).exists() or (tree / name).is_symlink():
                    os.replace(tree / name, top / name)
                    carried = True
            for rel in patched | set(old.get("patched", [])):
                if (top / rel).exists():
                    (top / rel).touch()
        if carried:
            log("carried over compiled objects from the previous tree (make rebuilds changes)")
        shutil.rmtree(tree, ignore_errors=True)
        os.replace(top, tree)
        stamp.write_text(
            json.dumps({"key": key, "patched": sorted(patched), "tracks_headers": "Makefile" in patched})
            + "\n"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tree


def write_config(tree: Path) -> None:
    """Makefile.config from the project's template."""
    inc, _ = numpy_include()
    text = (HERE / "Makefile.config.in").read_text().replace("@NUMPY_INCLUDE@", inc)
    cfg = tree / "Makefile.config"
    if not cfg.is_file() or cfg.read_text() != text:
        cfg.write_text(text)


def run_make(tree: Path, jobs: int) -> float:
    """Compile libcaffe, the tools and pycaffe; returns seconds spent."""
    logf = BUILD_ROOT / "build.log"
    log(f"compiling (CPU-only, make -j{jobs}); log: {logf}")
    t0 = time.monotonic()
    with open(logf, "w") as out:
        proc = subprocess.Popen(
            ["make", f"-j{jobs}", "all", "py"],
            cwd=tree,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        count = 0
        for line in proc.stdout:
            out.write(line)
            if line.startswith(("CXX", "LD", "AR", "PROTOC")):
                count += 1
                if count % 10 == 0:
                    log(f"  {count} steps, {time.monotonic() - t0:.0f} s")
        rc = proc.wait()
    if rc != 0:
        lines = logf.read_text(errors="replace").splitlines()
        errs = [ln for ln in lines if "error" in ln.lower()][:10] or lines[-20:]
        print("\n".join(errs), file=sys.stderr)
        raise BuildError(f"compiling Caffe failed (make exit {rc}); full log: {logf}")
    return time.monotonic() - t0


def gen_python_proto(dest: Path) -> None:
    """pycaffe's caffe_pb2: the project's own module, or generated from the same proto."""
    shim = (
        '"""pycaffe\'s schema module: the one model_libs uses (model_libs/proto/caffe.proto)."""\n'
        "try:\n"
        "    from model_libs.proto.caffe_pb2 import *  # noqa: F401,F403\n"
        "    from model_libs.proto import caffe_pb2 as _m\n"
        "except ImportError:  # model_libs not importable: same proto, generated copy\n"
        "    from caffe.proto._caffe_pb2_generated import *  # noqa: F401,F403\n"
        "    from caffe.proto import _caffe_pb2_generated as _m\n"
        "globals().update({k: v for k, v in vars(_m).items() if not k.startswith('__')})\n"
    )
    from model_libs.errors import ModelLibsError
    from model_libs.proto import regen  # the toolkit's one protoc runner

    if (regen.HERE / "caffe.proto").resolve() != PROTO.resolve():
        raise BuildError(
            f"model_libs is imported from {regen.HERE.parents[1]}, not from this checkout ({REPO}); "
            "run the build with this checkout's venv (pip install -e .)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        try:
            generated = regen.generate(Path(tmp))
        except ModelLibsError as exc:
            raise BuildError(f"cannot generate pycaffe's caffe_pb2: {exc}") from None
        shutil.copyfile(generated, dest / "_caffe_pb2_generated.py")
    (dest / "caffe_pb2.py").write_text(shim)


def install(tree: Path, key: str, src: dict, seconds: float) -> None:
    """Copy the results into build/caffe/install atomically; the marker is written last."""
    tmp = Path(tempfile.mkdtemp(prefix=".install.", dir=BUILD_ROOT))
    try:
        (tmp / "bin").mkdir()
        (tmp / "lib").mkdir()
        for so in (tree / "temp" / "lib").glob("libcaffe.so*"):
            shutil.copy2(so, tmp / "lib" / so.name, follow_symlinks=False)
        tools = {
            "caffe": "caffe.bin",
            "convert_imageset": "convert_imageset.bin",
            "compute_image_mean": "compute_image_mean.bin",
            "upgrade_net_proto_text": "upgrade_net_proto_text.bin",
        }
        for name, binary in tools.items():
            shutil.copy2(tree / "temp" / "tools" / binary, tmp / "bin" / name)
        shutil.copytree(
            tree / "python" / "caffe",
            tmp / "python" / "caffe",
            ignore=shutil.ignore_patterns("__pycache__", "test", "*.cpp"),
        )
        gen_python_proto(tmp / "python" / "caffe" / "proto")
        shutil.copyfile(PROTO, tmp / "caffe.proto")
        info = {
            "key": key,
            "source": f"{src['name']}=={src['version']}",
            "sdist_sha256": src["sha256"],
            "patches": [p.name for p in patch_files()],
            "schema": "model_libs/proto/caffe.proto",
            "cpu_only": True,
            "opencv": True,
            "lmdb": True,
            "python": platform.python_version(),
            "numpy": numpy_include()[1],
            "compile_seconds": round(seconds, 1),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "built_by": "scripts/setup.sh (caffe/build.py)",
        }
        # smoke test before declaring success: the tool starts, pycaffe imports
        res = subprocess.run([str(tmp / "bin" / "caffe"), "--version"], capture_output=True, text=True)
        if res.returncode != 0:
            print(res.stdout + res.stderr, file=sys.stderr)
            raise BuildError("the built caffe tool does not start (see above)")
        env = dict(os.environ, PYTHONPATH=f"{tmp / 'python'}{os.pathsep}{REPO}")
        res = subprocess.run(
            [sys.executable, "-c", "import caffe; caffe.set_mode_cpu()"],
            capture_output=True,
            text=True,
            env=env,
        )
        if res.returncode != 0:
            print(res.stdout + res.stderr, file=sys.stderr)
            raise BuildError("the built pycaffe does not import (see above)")
        (tmp / MARKER).write_text(json.dumps(info, indent=2) + "\n")
        old = BUILD_ROOT / ".install.old"
        shutil.rmtree(old, ignore_errors=True)
        if INSTALL.exists():
            os.replace(INSTALL, old)
        os.replace(tmp, INSTALL)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def link_venv(venv: Path) -> None:
    """Make ``import caffe`` and ``caffe`` work inside the virtualenv ``venv``."""
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    if not site.is_dir():
        raise BuildError(
            f"{venv}: not a Python {sys.version_info.major}.{sys.version_info.minor} virtualenv (no {site})"
        )
    (site / "model_libs_caffe.pth").write_text(str(INSTALL / "python") + "\n")
    for name in ("caffe", "convert_imageset", "compute_image_mean", "upgrade_net_proto_text"):
        link = venv / "bin" / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(INSTALL / "bin" / name)
    log(f"linked into {venv}: import caffe, {venv / 'bin' / 'caffe'}")


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = make_parser("caffe/build.py", __doc__.split("\n")[0])
    ap.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--force", action="store_true", help="rebuild even if cached")
    ap.add_argument(
        "--venv",
        type=Path,
        default=None,
        help="virtualenv to link into (default: the one running this script)",
    )
    args = ap.parse_args(argv)
    venv = args.venv or (Path(sys.prefix) if sys.prefix != sys.base_prefix else None)
    try:
        src = load_source()
        key = cache_key(src)
        info = read_marker(INSTALL)
        if not args.force and info and info.get("key") == key:
            log(f"up to date: {INSTALL} (built {info.get('built_at')}); nothing to do")
        else:
            if info:
                log("inputs changed since the last build: rebuilding")
            check_system()
            BUILD_ROOT.mkdir(parents=True, exist_ok=True)
            t0 = time.monotonic()
            sdist = fetch_sdist(src)
            tree = prepare_tree(sdist, src, key)
            write_config(tree)
            secs = run_make(tree, args.jobs)
            install(tree, key, src, secs)
            log(f"built and installed in {time.monotonic() - t0:.0f} s (compile {secs:.0f} s): {INSTALL}")
        if venv is not None:
            link_venv(venv)
    except BuildError as exc:
        emit_error(str(exc))
        return 1
    except KeyboardInterrupt:
        emit_error("interrupted; the previous install (if any) is untouched")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
