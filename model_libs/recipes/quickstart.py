"""The quickstart pipeline: data -> job -> train -> score -> demo pictures and plots.

``run(design, out, ...)`` takes the net design (a function returning a Recipe) from the
caller, so ``examples/dsod/quickstart.py`` shows the net and this module the plumbing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import ModelLibsError
from ..fsutil import Output
from .caffelog import plot_log
from .job import caffe_command, list_snapshots, write_job
from .score import ScoreResult, score
from .train import run_caffe


def _step(msg: str) -> None:
    print(f"[quickstart] {msg}", file=sys.stderr, flush=True)


def run(
    design: Callable,
    out: Path,
    iters: int = 1200,
    batch: int = 16,
    n_train: int = 400,
    n_test: int = 100,
    seed: int = 0,
    demo_images: int = 6,
    verbose: bool = False,
) -> ScoreResult:
    """Run every step under ``out``; returns the score of the final snapshot."""
    for name, value, low in (
        ("iters", iters, 1),
        ("batch", batch, 1),
        ("train", n_train, 1),
        ("test", n_test, 1),
    ):
        if value < low:
            raise ModelLibsError(f"quickstart: --{name} must be at least {low} (got {value})")
    if not 0 <= demo_images <= n_test:
        raise ModelLibsError(
            f"quickstart: --demo-images must be from 0 to --test ({n_test}), got {demo_images}"
        )
    started = time.monotonic()
    with Output(out, kind="folder", what="quickstart folder") as folder:  # one quickstart per folder
        return _run(
            design, folder.path.resolve(), iters, batch, n_train, n_test, seed, demo_images, verbose, started
        )


def _run(
    design: Callable,
    out: Path,
    iters: int,
    batch: int,
    n_train: int,
    n_test: int,
    seed: int,
    demo_images: int,
    verbose: bool,
    started: float,
) -> ScoreResult:
    from ..caffe_env import caffe_binary
    from ..datasets.synthetic import build_synthetic_lmdbs

    caffe_bin = str(caffe_binary())  # fails now, clearly, if Caffe is not built
    _step(f"1/5 synthetic dataset: {n_train} train + {n_test} test images -> {out / 'data'}")
    data = build_synthetic_lmdbs(
        out / "data", seed=seed, n_train=n_train, n_test=n_test, force=True, progress=None
    )
    r = design(data, out, iters, batch, n_test)
    _step(f"2/5 net {r.model_name}: writing job files to {out / 'job'}")
    for old in (out / "job").glob(f"{r.model_name}_iter_*"):
        old.unlink()
    job = write_job(r, out / "job", gpus=[], caffe_bin=caffe_bin)
    job.files["log"].unlink(missing_ok=True)
    _step(f"3/5 training {iters} iterations on the CPU (log: {job.files['log']})")
    cmd = caffe_command(caffe_bin, job.files["solver"], [])
    log = run_caffe(cmd, job.files["log"], r.max_iter, echo=verbose)
    snaps = list_snapshots(job.snapshot_prefix)
    if not snaps or snaps[-1][2] is None:
        raise ModelLibsError(f"training wrote no caffemodel under {job.out_dir}")
    weights = snaps[-1][2]
    plot = plot_log(log, out / "training.png", title=f"{r.model_name} on the synthetic set")
    _step(f"4/5 scoring {weights.name} on the test LMDB")
    result = score(r, weights, out / "score", caffe_bin, echo=verbose)
    print(result.table())
    _step(f"5/5 demo on {demo_images} held-out images -> {out / 'demo'}")
    pictures = demo(job.files["deploy"], weights, data, out / "demo", demo_images, r.label_map_file)
    _step(
        f"done in {time.monotonic() - started:.0f} s: pictures {len(pictures)} in {out / 'demo'}, "
        f"plot {plot}, log {job.files['log']}"
    )
    return result


def demo(
    deploy: Path, weights: Path, data, out_dir: Path, n: int, labelmap: str, threshold: float = 0.4
) -> list[Path]:
    """Detect on the first ``n`` test images and save them with boxes as PNGs."""
    import cv2

    from ..engines.detector import Detector, read_image
    from ..engines.draw import draw
    from ..fsutil import is_png

    ids = (data.source.root / data.source.dataset / "ImageSets" / "Main" / "test.txt").read_text().split()
    images = [data.source.root / data.source.dataset / "JPEGImages" / f"{i}.jpg" for i in ids[:n]]
    det = Detector(deploy, weights, engine="opencv", labelmap=labelmap, threshold=threshold)
    written = []
    with Output(out_dir, kind="folder", what="demo picture", inputs=images, recognise=is_png) as folder:
        for path, found in zip(images, det.detect(images)):
            img = draw(read_image(path), found)
            ok, png = cv2.imencode(".png", img)
            if ok:
                written.append(folder.write_bytes(png.tobytes(), f"{path.stem}.png"))
            print(f"{path.name}: " + (", ".join(f"{d.name} {d.score:.2f}" for d in found) or "nothing"))
    return written
