"""Score a snapshot the way the official DSOD scoring scripts do.

A solver with ``max_iter: 0`` and ``test_initialization: true`` makes ``caffe train
--weights=W`` run the test net once over the whole test set and stop: DetectionOutput
writes VOC-format result files, DetectionEvaluate feeds the solver's mAP (ap_version).
Per-class AP is then computed by the toolkit from those result files and the test LMDB's
ground truth (VOC devkit rules), so both numbers are reported side by side.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..dsod import nets
from ..dsod.recipe import Recipe
from ..errors import ModelLibsError
from ..fsutil import Output, ensure_writable_dir
from ..netspec import to_prototxt
from .job import caffe_command, check_inputs
from .train import Progress, run_caffe


@dataclass
class ScoreResult:
    """What scoring measured."""

    caffe_map: float  # the solver's detection_eval (ap_version)
    ap_version: str
    per_class: dict[str, float | None] = field(default_factory=dict)  # toolkit, from result files
    toolkit_map: float | None = None
    result_dir: Path | None = None
    log: Path | None = None

    def table(self) -> str:
        lines = [f"{'class':<20}{'AP':>8}"]
        for name, ap in self.per_class.items():
            lines.append(f"{name:<20}{'-' if ap is None else f'{ap:8.4f}':>8}")
        if self.toolkit_map is not None:
            lines.append(f"{'mAP (toolkit)':<20}{self.toolkit_map:8.4f}")
        lines.append(f"{'mAP (Caffe, ' + self.ap_version + ')':<20}{self.caffe_map:8.4f}")
        return "\n".join(lines)


def score(
    r: Recipe,
    weights: str | Path,
    out_dir: str | Path,
    caffe_bin: str,
    gpus: list[int] | None = None,
    echo: bool = False,
    quiet: bool = False,
) -> ScoreResult:
    """Run the test set through ``weights`` and return the mAPs (Caffe's and per class)."""
    from ..engines.caffemodel import read_caffemodel, require_match
    from ..inputs import require_file

    weights = require_file(weights, "snapshot")
    check_inputs(r, ("test_data", "label_map_file", "name_size_file"))
    require_match(nets.deploy_net(r), read_caffemodel(weights), str(weights))
    inputs = [weights, r.test_data, r.label_map_file, r.name_size_file]
    with Output(
        out_dir, kind="folder", what="scoring folder", inputs=inputs, recognise=nets.is_prototxt
    ) as folder:
        return _score(r, weights, folder, caffe_bin, gpus, echo, quiet)


def _score(
    r: Recipe,
    weights: Path,
    folder: Output,
    caffe_bin: str,
    gpus: list[int] | None,
    echo: bool,
    quiet: bool = False,
) -> ScoreResult:
    out = folder.path.resolve()
    r = copy.copy(r)
    r.output_result_dir = str(out / "results")
    r.test_initialization = True
    ensure_writable_dir(r.output_result_dir, inputs=[weights])
    files = {
        "train": out / "train.prototxt",
        "test": out / "test.prototxt",
        "solver": out / "score_solver.prototxt",
        "log": out / "score.log",
    }
    # Caffe builds the solver's train net although max_iter 0 never runs it: at batch 1, so
    # that scoring does not allocate a training batch (48 GRP images at 320x320 on the CPU
    # need more memory than many machines have).
    one = dataclasses.replace(r, batch_size=1, accum_batch_size=1)
    folder.write_text(nets.net_text(nets.train_net(one, gpus)), files["train"].name)
    folder.write_text(nets.net_text(nets.test_net(r)), files["test"].name)
    solver = nets.solver(r, str(files["train"]), str(files["test"]), str(out / "score"), gpus)
    solver.max_iter = 0
    solver.snapshot_after_train = False
    solver.display = 1
    folder.write_text(to_prototxt(solver) + "\n", files["solver"].name)
    files["log"].unlink(missing_ok=True)
    cmd = caffe_command(caffe_bin, files["solver"], gpus or [], weights=weights)
    if not quiet:
        print("scoring: " + " ".join(cmd), file=sys.stderr)
    # a test pass has no iterations to count: no training progress line; with ``echo`` (and
    # not ``quiet``) Caffe's own lines are shown
    raw = sys.stderr.write if echo and not quiet else None
    with open(os.devnull, "w") as devnull:
        log = run_caffe(cmd, files["log"], max_iter=0, on_line=raw, progress=Progress(0, stream=devnull))
    if not log.maps:
        raise ModelLibsError(f"Caffe reported no detection_eval; see {files['log']}")
    result = ScoreResult(
        caffe_map=log.maps[-1][1],
        ap_version=r.ap_version,
        result_dir=Path(r.output_result_dir),
        log=files["log"],
    )
    _per_class(r, result)
    return result


def _per_class(r: Recipe, result: ScoreResult) -> None:
    """Toolkit AP per class from DetectionOutput's VOC result files and the LMDB ground truth."""
    if r.output_format != "VOC":
        return
    from ..datasets.labelmap import label_to_name, load_labelmap
    from ..evaluation import evaluate_voc, load_lmdb_ground_truth, read_result_dir

    names = {k: v for k, v in label_to_name(load_labelmap(r.label_map_file)).items() if k != 0}
    gt = load_lmdb_ground_truth(r.test_data, names)
    dets = read_result_dir(result.result_dir, classes=list(names.values()), prefix=r.output_name_prefix)
    metric = "11point" if r.ap_version == "11point" else "area"
    ev = evaluate_voc(dets, gt, classes=list(names.values()), metric=metric)
    result.per_class = dict(ev.ap)
    result.toolkit_map = ev.mAP
