"""Command line: ``python -m model_libs <command> [args]``.

Each command lives in its own module as ``main(argv: list[str]) -> int``; this file only
dispatches, so importing the CLI costs nothing until a command runs.
"""

from __future__ import annotations

import importlib
import sys

from .errors import ModelLibsError

# command name -> (module, one-line help). Modules are imported lazily.
COMMANDS: dict[str, tuple[str, str]] = {
    "summary": ("model_libs.summary", "shape-infer a prototxt: layers, shapes, params, FLOPs"),
    "detect": ("model_libs.engines.cli_detect", "detect objects in images (OpenCV DNN or Caffe engine)"),
    "weights": ("model_libs.engines.cli_weights", "caffemodel files: init from fillers, show, check"),
    "eval": ("model_libs.evaluation.cli", "score detections: VOC / COCO mAP, compare runs"),
    "convert": ("model_libs.datasets.cli_convert", "convert VOC or COCO to an SSD LMDB"),
    "layout": ("model_libs.datasets.layout", "the official datasets' LMDBs, lists, label maps; build them"),
    "synthetic": ("model_libs.datasets.cli_synthetic", "make the built-in synthetic dataset"),
    "inspect": ("model_libs.datasets.cli_inspect", "check an LMDB and draw records with boxes"),
    "info": ("model_libs.caffe_env", "which Caffe and OpenCV DNN the toolkit uses"),
}


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: python -m model_libs <command> [args]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in sorted(COMMANDS.items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.main(rest) or 0)
    except ModelLibsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
