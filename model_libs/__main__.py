"""Command line: ``python -m model_libs <command> [args]``.

Each command lives in its own module as ``main(argv: list[str]) -> int``; this file only
dispatches, so importing the CLI costs nothing until a command runs. Every command follows
the convention of :mod:`model_libs.cli` (one ``error:`` line, exit 2); the dispatcher runs
each under :func:`model_libs.cli.guarded` as well, so a command that forgets cannot leak a
traceback for bad input.

To add a command: write ``main(argv)`` in its module (parser from
:func:`model_libs.cli.make_parser`, body through :func:`model_libs.cli.run`) and add one row
to :data:`COMMANDS`.
"""

from __future__ import annotations

import importlib
import sys

from .cli import EXIT_ERROR, PROG, emit_error, guarded

# command name -> (module, one-line help). Modules are imported lazily.
COMMANDS: dict[str, tuple[str, str]] = {
    "summary": ("model_libs.summary", "shape-infer a prototxt: layers, shapes, params, FLOPs"),
    "detect": (
        "model_libs.engines.cli_detect",
        "detect objects in images (OpenCV DNN, Caffe or PyTorch engine)",
    ),
    "weights": ("model_libs.engines.cli_weights", "caffemodel files: init from fillers, show, check"),
    "eval": ("model_libs.evaluation.cli", "score detections: VOC / COCO mAP, compare runs"),
    "convert": ("model_libs.datasets.cli_convert", "convert VOC or COCO to an SSD LMDB"),
    "layout": (
        "model_libs.datasets.cli_layout",
        "the official datasets' LMDBs, lists, label maps; build them",
    ),
    "synthetic": ("model_libs.datasets.cli_synthetic", "make the built-in synthetic dataset"),
    "inspect": ("model_libs.datasets.cli_inspect", "check an LMDB and draw records with boxes"),
    "info": ("model_libs.caffe_env", "which Caffe and OpenCV DNN the toolkit uses"),
    "job": ("model_libs.recipes.cli_job", "write an official DSOD job: nets, solver, job script"),
    "score": ("model_libs.recipes.cli_score", "score a snapshot on a test set as the official scripts do"),
    "plot": ("model_libs.recipes.plot", "a Caffe training log as a table and a PNG plot"),
    "train": ("model_libs.recipes.cli_train", "train a solver with Caffe or PyTorch (--engine caffe|torch)"),
}


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = [f"usage: {PROG} <command> [args]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in sorted(COMMANDS.items())]
    lines += ["", f"'{PROG} <command> --help' describes a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        emit_error(f"unknown command {name!r}; '{PROG} --help' lists the commands")
        return EXIT_ERROR
    module = importlib.import_module(COMMANDS[name][0])
    return guarded(lambda: module.main(rest))


if __name__ == "__main__":
    sys.exit(main())
