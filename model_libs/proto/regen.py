"""Regenerate ``caffe_pb2.py`` from ``caffe.proto`` (run after editing the schema).

Usage: ``python -m model_libs.proto.regen [--check]``. With ``--check`` nothing is written;
the exit status says whether the committed bindings are current.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).parent


def generate(out_dir: Path) -> Path:
    """Run the pinned protoc (grpc_tools) on caffe.proto into ``out_dir``; return the file.

    The toolkit's one protoc runner: ``caffe/build.py`` generates pycaffe's fallback schema
    module through it too. protoc runs in a child process: grpc_tools links its own C++
    protobuf runtime, and loaded beside the Python one in a process that later uses pycaffe,
    it aborts that process at exit.
    """
    from ..errors import ModelLibsError

    if importlib.util.find_spec("grpc_tools") is None:
        raise ModelLibsError(
            "grpc_tools is not installed: pip install -e '.[dev]' (grpcio-tools, pinned in pyproject.toml)"
        )
    proto = HERE / "caffe.proto"
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{HERE}", f"--python_out={out_dir}", str(proto)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        detail = (res.stderr or res.stdout).strip().splitlines()
        raise ModelLibsError(f"{proto}: protoc failed (exit {res.returncode}): {detail[0] if detail else ''}")
    return Path(out_dir) / "caffe_pb2.py"


def main(argv: Sequence[str] | None = None) -> int:
    from ..cli import make_parser, run

    def parser():
        ap = make_parser("python -m model_libs.proto.regen", "Regenerate caffe_pb2.py from caffe.proto.")
        ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if caffe_pb2.py is stale")
        return ap

    return run(argv, parser, _regen)


def _regen(args) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp)).read_bytes()
    current = HERE / "caffe_pb2.py"
    if args.check:
        ok = current.exists() and current.read_bytes() == fresh
        stale = "caffe_pb2.py is STALE: run python -m model_libs.proto.regen"
        print("caffe_pb2.py is current" if ok else stale)
        return 0 if ok else 1
    current.write_bytes(fresh)
    print(f"wrote {current}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
