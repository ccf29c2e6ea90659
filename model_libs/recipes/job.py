"""The job of a recipe: its files, the Caffe command line, snapshots and resuming."""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..dsod import nets
from ..dsod.recipe import Recipe
from ..errors import ModelLibsError
from ..fsutil import Output
from . import snapshots


@dataclass
class Job:
    """A written job: where its files are and how Caffe is invoked."""

    recipe: Recipe
    out_dir: Path
    gpus: list[int]
    files: dict[str, Path]

    @property
    def snapshot_prefix(self) -> Path:
        return self.files["snapshot_prefix"]


def list_snapshots(prefix: str | Path) -> list[tuple[int, Path, Path | None]]:
    """``(iteration, solverstate, caffemodel)`` of every snapshot of ``prefix`` that has a
    solverstate. Whether a snapshot is complete is :func:`.snapshots.newest_complete_snapshot`'s job."""
    return [(s.iteration, s.state, s.model) for s in snapshots.list_snapshots(prefix) if s.state is not None]


def prune_snapshots(prefix: str | Path, keep: int = 1) -> list[Path]:
    """Delete all but the newest ``keep`` snapshots (state and model); returns what went."""
    snaps = list_snapshots(prefix)
    removed = []
    for _, state, model in snaps[:-keep] if keep > 0 else snaps:
        for f in (state, model):
            if f is not None and f.exists():
                f.unlink()
                removed.append(f)
    return removed


def caffe_command(
    caffe_bin: str,
    solver_file: str | Path,
    gpus: list[int],
    snapshot: str | Path | None = None,
    weights: str | Path | None = None,
) -> list[str]:
    """``caffe train --solver=... [--snapshot=...|--weights=...] [--gpu 0,1]`` as argv."""
    cmd = [str(caffe_bin), "train", f"--solver={solver_file}"]
    if snapshot:
        cmd.append(f"--snapshot={snapshot}")
    elif weights:
        cmd.append(f"--weights={weights}")
    if gpus:
        cmd += ["--gpu", ",".join(map(str, gpus))]
    return cmd


def job_script(cmd: list[str], log_file: str | Path, workdir: str | Path) -> str:
    """A shell script running ``cmd`` from ``workdir`` with its output tee'd to ``log_file``."""
    # One flag per line, "--gpu 0,1" kept together, as the official job scripts read.
    lines = [f"{shlex.quote(cmd[0])} {shlex.quote(cmd[1])}"]
    rest = cmd[2:]
    while rest:
        flag = rest.pop(0)
        if not flag.startswith("--") or "=" in flag or not rest or rest[0].startswith("--"):
            lines.append(shlex.quote(flag))
        else:
            lines.append(f"{shlex.quote(flag)} {shlex.quote(rest.pop(0))}")
    body = " \\\n".join(lines)
    return (
        f"#!/usr/bin/env bash\nset -o pipefail\ncd {shlex.quote(str(workdir))}\n"
        f"{body} \\\n2>&1 | tee {shlex.quote(str(log_file))}\n"
    )


def write_job(
    r: Recipe,
    out_dir: str | Path,
    gpus: list[int],
    caffe_bin: str = "caffe",
    snapshot: str | Path | None = None,
    weights: str | Path | None = None,
) -> Job:
    """Write train/test/deploy/solver prototxts and the job script into ``out_dir``."""
    out = Path(out_dir).resolve()
    with job_lock(out) as folder:
        files = nets.write_nets(r, out, gpus)
        cmd = caffe_command(caffe_bin, files["solver"], gpus, snapshot=snapshot, weights=weights)
        folder.recognise = is_job_script
        folder.write_text(job_script(cmd, files["log"], os.getcwd()), files["job"].name, executable=True)
    return Job(r, out, gpus, files)


# What each input of a recipe is called in error messages.
_INPUTS = {
    "train_data": "training LMDB",
    "test_data": "test LMDB",
    "label_map_file": "label map",
    "name_size_file": "name/size list",
}


def check_inputs(r: Recipe, fields: Sequence[str]) -> None:
    """Refuse to start when an input of the recipe is missing or unusable (before Caffe is
    launched): LMDBs are checked as :func:`~model_libs.datasets.lmdb_io.check_lmdb_file` does
    (a truncated one would crash Caffe), the label map must fit the net's ``num_classes``."""
    from ..datasets.labelmap import check_labelmap_fits, load_labelmap
    from ..datasets.lmdb_io import check_lmdb_file

    for name in fields:
        path = getattr(r, name)
        if not path or not Path(path).exists():
            raise ModelLibsError(f"{path}: {_INPUTS[name]} not found")
        if name in ("train_data", "test_data"):
            check_lmdb_file(path)
        elif name == "label_map_file":
            check_labelmap_fits(load_labelmap(path), r.num_classes, str(path), f"the {r.model} net")
        elif Path(path).is_dir():
            raise ModelLibsError(f"{path}: {_INPUTS[name]} is a folder, expected a file")


def job_lock(out_dir: str | Path) -> Output:
    """Hold this while writing into a job folder or training in it: a second writer of the
    same job (another training, a job rewrite) gets a clear error instead of mixing snapshots."""
    return Output(out_dir, kind="folder", what="job folder")


def is_job_script(path: Path) -> bool:
    """A job script as :func:`job_script` writes it (what a rewrite may replace)."""
    try:
        return path.read_bytes().startswith(b"#!/usr/bin/env bash\nset -o pipefail\ncd ")
    except OSError:
        return False
