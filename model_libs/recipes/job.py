"""The job of a recipe: its files, the Caffe command line, snapshots and resuming."""

from __future__ import annotations

import os
import re
import shlex
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..dsod import nets
from ..dsod.recipe import Recipe
from ..errors import ModelLibsError
from ..fsutil import atomic_write_text


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


_ITER = re.compile(r"_iter_(\d+)\.(solverstate|caffemodel)$")


def list_snapshots(prefix: str | Path) -> list[tuple[int, Path, Path | None]]:
    """Snapshots written by Caffe for ``prefix`` (``<prefix>_iter_N.solverstate``)."""
    prefix = Path(prefix)
    if not prefix.parent.is_dir():
        return []
    found: dict[int, dict[str, Path]] = {}
    for f in prefix.parent.iterdir():
        if not f.name.startswith(prefix.name + "_iter_"):
            continue
        m = _ITER.search(f.name)
        if m:
            found.setdefault(int(m.group(1)), {})[m.group(2)] = f
    return [
        (it, d["solverstate"], d.get("caffemodel")) for it, d in sorted(found.items()) if "solverstate" in d
    ]


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
    files = nets.write_nets(r, out, gpus)
    cmd = caffe_command(caffe_bin, files["solver"], gpus, snapshot=snapshot, weights=weights)
    atomic_write_text(files["job"], job_script(cmd, files["log"], os.getcwd()))
    files["job"].chmod(files["job"].stat().st_mode | stat.S_IXUSR | stat.S_IXGRP)
    return Job(r, out, gpus, files)


# What each input of a recipe is called in error messages.
_INPUTS = {
    "train_data": "training LMDB",
    "test_data": "test LMDB",
    "label_map_file": "label map",
    "name_size_file": "name/size list",
}


def check_inputs(r: Recipe, fields: Sequence[str]) -> None:
    """Refuse to start when an input of the recipe is missing (before Caffe is launched)."""
    for name in fields:
        path = getattr(r, name)
        if not path or not Path(path).exists():
            raise ModelLibsError(f"{path}: {_INPUTS[name]} not found")
