"""The quickstart pipeline: data -> net -> train -> score -> demo pictures -> training plot.

``run(design, out, ...)`` takes the net design (a function returning a Recipe) from the
caller, so ``examples/dsod/quickstart.py`` shows the net and this module the plumbing:

1. the synthetic shapes set in VOC layout and its train/test LMDBs;
2. the job files (train/test/deploy/solver prototxts) of the designed net;
3. training with the fastest engine available (the PyTorch engine; the project's Caffe
   with ``engine="caffe"``), which writes a ``.caffemodel`` snapshot;
4. scoring that snapshot the official way with the project's Caffe (DetectionEvaluate,
   the solver's ``ap_version``) and per class with the toolkit;
5. the demo: detections by OpenCV DNN on held-out images, ground truth drawn faintly
   beside them, one PNG per image and a contact sheet of all of them;
6. the training plot (loss, learning rate, test mAP).

Each stage shows one live line with its elapsed time; training adds an ETA.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ..errors import ModelLibsError
from ..fsutil import Output
from .caffelog import TrainLog, plot_log
from .job import caffe_command, list_snapshots, write_job
from .score import ScoreResult, score
from .train import Progress, clock, run_caffe

ENGINES = ("auto", "torch", "caffe")
STAGES = 6
# The defaults, measured on 2 cores (README): 4000 iterations of batch 8 over 3000 synthetic
# training images reach mAP 0.85 in about 5 minutes with the PyTorch engine.
ITERS, BATCH, N_TRAIN, N_TEST, DEMO_IMAGES = 4000, 8, 3000, 100, 6


def resolve_engine(engine: str) -> str:
    """``auto`` is the PyTorch engine when torch is installed, else Caffe."""
    if engine not in ENGINES:
        raise ModelLibsError(f"quickstart: unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "auto":
        return "torch" if importlib.util.find_spec("torch") is not None else "caffe"
    if engine == "torch" and importlib.util.find_spec("torch") is None:
        raise ModelLibsError("quickstart: --engine torch needs PyTorch (pip install 'model_libs[torch]')")
    return engine


def engine_description(engine: str) -> str:
    """Which engine trained, in words (version, device, threads)."""
    if engine == "torch":
        import torch

        return f"PyTorch {torch.__version__} on the CPU ({torch.get_num_threads()} threads)"
    return "the project's SSD Caffe on the CPU"


class Stage:
    """One stage's live line: ``[quickstart k/6] what ...`` while it runs (updated in place
    on a terminal), then the same line with its result and elapsed time."""

    def __init__(self, k: int, what: str, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.prefix = f"[quickstart {k}/{STAGES}] "
        self.what = what
        self.started = time.monotonic()
        self._write(f"{self.prefix}{what} ...", final=not self.tty)

    def _write(self, text: str, final: bool) -> None:
        if self.tty:
            self.stream.write("\r" + text + "\x1b[K" + ("\n" if final else ""))
        elif final:
            self.stream.write(text + "\n")
        self.stream.flush()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def done(self, result: str) -> None:
        self._write(f"{self.prefix}{self.what}: {result} [{clock(self.elapsed)}]", final=True)


@dataclass
class QuickstartResult:
    """What the quickstart made and measured."""

    score: ScoreResult
    engine: str  # the engine that trained: "torch" or "caffe"
    engine_text: str
    iterations: int
    train_seconds: float
    total_seconds: float
    weights: Path
    pictures: list[Path] = field(default_factory=list)
    contact_sheet: Path | None = None
    plot: Path | None = None
    log: Path | None = None

    def summary(self) -> str:
        s = self.score
        toolkit = f", toolkit {s.toolkit_map:.4f}" if s.toolkit_map is not None else ""
        return (
            f"quickstart: trained {self.iterations} iterations with {self.engine_text} in "
            f"{clock(self.train_seconds)}; test mAP {s.caffe_map:.4f} (Caffe, {s.ap_version}){toolkit}; "
            f"{clock(self.total_seconds)} in all"
        )


def run(
    design: Callable,
    out: Path,
    iters: int = ITERS,
    batch: int = BATCH,
    n_train: int = N_TRAIN,
    n_test: int = N_TEST,
    seed: int = 0,
    demo_images: int = DEMO_IMAGES,
    verbose: bool = False,
    engine: str = "auto",
) -> QuickstartResult:
    """Run every stage under ``out``; returns what was measured (the final snapshot's score)."""
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
    engine = resolve_engine(engine)
    started = time.monotonic()
    with Output(out, kind="folder", what="quickstart folder") as folder:  # one quickstart per folder
        return _run(
            design,
            folder.path.resolve(),
            iters,
            batch,
            n_train,
            n_test,
            seed,
            demo_images,
            verbose,
            engine,
            started,
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
    engine: str,
    started: float,
) -> QuickstartResult:
    from ..caffe_env import caffe_binary
    from ..datasets.synthetic import build_synthetic_lmdbs

    caffe_bin = str(caffe_binary())  # scoring needs it: fail now, clearly, if Caffe is not built

    stage = Stage(1, f"synthetic set: {n_train} train + {n_test} test images -> {out / 'data'}")
    data = build_synthetic_lmdbs(
        out / "data", seed=seed, n_train=n_train, n_test=n_test, force=True, progress=None
    )
    stage.done(f"{data.source.n_objects} objects, LMDBs built")

    r = design(data, out, iters, batch, n_test)
    stage = Stage(2, f"net {r.model_name}: job files -> {out / 'job'}")
    for old in (out / "job").glob(f"{r.model_name}_iter_*"):
        old.unlink()
    job = write_job(r, out / "job", gpus=[], caffe_bin=caffe_bin)
    job.files["log"].unlink(missing_ok=True)
    stage.done("train/test/deploy/solver prototxts written")

    text = engine_description(engine)
    stage = Stage(3, f"training {iters} iterations with {text}")
    progress = Progress(r.max_iter, echo=verbose, prefix=stage.prefix + "training: ")
    log = _train(engine, job, caffe_bin, progress)
    train_seconds = stage.elapsed
    snaps = list_snapshots(job.snapshot_prefix)
    if not snaps or snaps[-1][2] is None:
        raise ModelLibsError(f"training wrote no caffemodel under {job.out_dir}")
    weights = snaps[-1][2]
    final_loss = f"final loss {log.loss[-1][1]:.3f}, " if log.loss else ""
    stage.done(f"{final_loss}snapshot {weights.name}")

    stage = Stage(4, f"scoring {weights.name} with Caffe on the test LMDB")
    result = score(r, weights, out / "score", caffe_bin, echo=verbose, quiet=not verbose)
    stage.done(f"mAP {result.caffe_map:.4f} (Caffe, {result.ap_version})")
    print(result.table())

    stage = Stage(5, f"demo on {demo_images} held-out images with OpenCV DNN -> {out / 'demo'}")
    pictures, sheet = demo(job.files["deploy"], weights, data, out / "demo", demo_images, r.label_map_file)
    stage.done(f"{len(pictures)} pictures and {sheet.name if sheet else 'no contact sheet'}")

    stage = Stage(6, f"training plot -> {out / 'training.png'}")
    plot = plot_log(log, out / "training.png", title=f"{r.model_name} on the synthetic set ({engine})")
    stage.done(f"{len(log.loss)} loss and {len(log.maps)} mAP points")

    return QuickstartResult(
        score=result,
        engine=engine,
        engine_text=text,
        iterations=log.last_iter,
        train_seconds=train_seconds,
        total_seconds=time.monotonic() - started,
        weights=weights,
        pictures=pictures,
        contact_sheet=sheet,
        plot=plot,
        log=job.files["log"],
    )


def _train(engine: str, job, caffe_bin: str, progress: Progress) -> TrainLog:
    """Train the written job with ``engine``; returns what its log said."""
    if engine == "caffe":
        cmd = caffe_command(caffe_bin, job.files["solver"], [])
        return run_caffe(cmd, job.files["log"], job.recipe.max_iter, progress=progress)
    from ..pytorch.trainer import TrainOptions
    from .solver_job import load_solver_job
    from .train import run_torch_job

    # The light transform of a small set is cheap next to the net: on two cores, reading
    # in the training process beats worker processes that compete with it for the cores.
    opts = TrainOptions(device="cpu", workers=0)
    log = run_torch_job(load_solver_job(job.files["solver"]), opts, job.files["log"], progress)
    assert log is not None  # a single process is rank 0
    return log


def demo(
    deploy: Path, weights: Path, data, out_dir: Path, n: int, labelmap: str, threshold: float = 0.4
) -> tuple[list[Path], Path | None]:
    """Detect on the first ``n`` test images with OpenCV DNN; save each as a PNG with the
    detections (solid, captioned) over the ground truth (faint), and all of them on one
    contact sheet (``contact_sheet.png``). Returns (pictures, contact sheet)."""
    from ..datasets.labelmap import load_labelmap, name_to_label
    from ..datasets.voc import parse_voc_xml
    from ..draw import DrawnBox, contact_sheet, draw_boxes
    from ..engines.detector import Detector, read_image
    from ..fsutil import is_png

    root = data.source.root / data.source.dataset
    ids = (root / "ImageSets" / "Main" / "test.txt").read_text().split()[:n]
    images = [root / "JPEGImages" / f"{i}.jpg" for i in ids]
    labels = name_to_label(load_labelmap(labelmap))
    det = Detector(deploy, weights, engine="opencv", labelmap=labelmap, threshold=threshold)
    written: list[Path] = []
    drawn, captions = [], []
    sheet = None
    with Output(out_dir, kind="folder", what="demo picture", inputs=images, recognise=is_png) as folder:
        for i, (path, found) in enumerate(zip(images, det.detect(images))):
            truth = parse_voc_xml(root / "Annotations" / f"{ids[i]}.xml").objects
            # VOC boxes are 1-based pixel indices; the drawer takes 0-based pixels.
            boxes = [DrawnBox(labels.get(o.name, 0), [v - 1 for v in o.box], "", faint=True) for o in truth]
            boxes += [DrawnBox(d.label, d.box, f"{d.name} {d.score:.2f}") for d in found]
            img = draw_boxes(read_image(path), boxes)
            written.append(folder.write_bytes(_png(img), f"{path.stem}.png"))
            drawn.append(img)
            captions.append(f"{path.stem}: {len(found)} found, {len(truth)} true")
            print(f"{path.name}: " + (", ".join(f"{d.name} {d.score:.2f}" for d in found) or "nothing"))
        if drawn:
            title = f"detections (solid, score >= {threshold:g}) over the ground truth (dashed)"
            sheet = folder.write_bytes(_png(contact_sheet(drawn, captions, title=title)), "contact_sheet.png")
    return written, sheet


def _png(img) -> bytes:
    import cv2

    ok, png = cv2.imencode(".png", img)
    if not ok:
        raise ModelLibsError("OpenCV could not encode a demo picture as PNG")
    return png.tobytes()
