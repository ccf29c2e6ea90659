"""A small world of real inputs and existing outputs for the bad-input probe.

Everything a command reads (a VOC-layout set, its LMDB, label maps, a deploy net and its
caffemodel, result files, reports, a Caffe log, images, a COCO set) plus things a careless
command could destroy (a user's folder, a user's notes). :func:`tree_state` fingerprints the
whole folder so a test can show that a refused command changed nothing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("circle", "square", "triangle", "star", "ring")
LOG = """\
I1125 10:00:00.000 1 solver.cpp:58] Solving tiny
I1125 10:00:03.000 1 solver.cpp:228] Iteration 0, loss = 21.5
I1125 10:00:03.000 1 sgd_solver.cpp:106] Iteration 0, lr = 0.04
I1125 10:00:09.000 1 solver.cpp:228] Iteration 10, loss = 9.25
I1125 10:00:16.000 1 solver.cpp:322] Optimization Done.
"""


def tiny_recipe(num_output_zero: bool = False):
    """The README's "design your own" net at 64x64 with the synthetic set's 6 classes."""
    from model_libs.dsod import Backbone, PriorConfig, Recipe, dsod_body

    bb = Backbone(
        stem=(8, 8, 16),
        growth=8,
        bottleneck_width=1,
        blocks=(1, 1, 1, 1),
        second_channels=16,
        extra_channels=(16, 16),
        sources=("First", "Second", "Third", "Fourth"),
    )
    priors = PriorConfig(
        min_sizes=[8, 20, 36, 54], max_sizes=[20, 36, 54, 64], aspect_ratios=[[2]] * 4, steps=[8, 16, 32, 64]
    )
    return Recipe(
        model="tiny",
        dataset="Synth",
        job_name="tiny",
        model_name="tiny",
        resize=(64, 64),
        num_classes=6,
        body=functools.partial(dsod_body, bb=bb),
        priors=priors,
        normalizations=[20] * 4,
    )


@functools.cache
def _template(root: str) -> Path:
    """Build the world once per session (copied for each test)."""
    from model_libs.datasets.labelmap import save_labelmap, voc_labelmap
    from model_libs.datasets.synthetic import make_synthetic
    from model_libs.datasets.voc import convert_voc
    from model_libs.dsod import deploy_net
    from model_libs.engines.caffemodel import write_caffemodel
    from model_libs.engines.init import init_weights
    from model_libs.evaluation.report import voc_report, write_json
    from model_libs.evaluation.voc import evaluate_voc, load_voc_ground_truth
    from model_libs.netspec import to_prototxt

    w = Path(root)
    syn = make_synthetic(w / "voc", seed=3, n_train=3, n_test=3)
    shutil.copy(syn.labelmap, w / "labelmap.prototxt")
    save_labelmap(voc_labelmap(), w / "voc_labelmap.prototxt")
    convert_voc(w / "voc", "Synth:test", w / "lmdb", labelmap=w / "labelmap.prototxt", progress=False)
    (w / "net").mkdir()
    deploy = deploy_net(tiny_recipe())
    (w / "net" / "deploy.prototxt").write_text(to_prototxt(deploy))
    write_caffemodel(w / "net" / "w.caffemodel", init_weights(deploy, seed=0))
    bad = to_prototxt(deploy).replace("num_output: 8\n", "num_output: 0\n", 1)
    assert bad != to_prototxt(deploy)
    (w / "net" / "num_output_0.prototxt").write_text(bad)
    # detections = the ground truth with a score: a perfect result set
    gt = load_voc_ground_truth(w / "voc", "Synth", "test")
    res = w / "results"
    res.mkdir()
    rows = {c: [] for c in CLASSES}
    dets = []
    for img, objs in gt.items():
        for name, box, _ in objs:
            rows[name].append(f"{img} 0.9 {' '.join(f'{v:g}' for v in box)}\n")
            dets.append({"image_id": img, "class": name, "score": 0.9, "bbox": list(box)})
    for c in CLASSES:
        (res / f"comp4_det_test_{c}.txt").write_text("".join(rows[c]))
    (w / "dets.json").write_text(json.dumps(dets))
    from model_libs.evaluation.results import read_result_dir

    ev = evaluate_voc(read_result_dir(res, CLASSES), gt, classes=list(CLASSES))
    write_json(w / "report_a.json", voc_report(ev))
    write_json(w / "report_b.json", voc_report(ev))
    (w / "train.log").write_text(LOG)
    # images: a JPEG and a PNG
    (w / "images").mkdir()
    src = next((w / "voc" / "Synth" / "JPEGImages").glob("*.jpg"))
    shutil.copy(src, w / "images" / "a.jpg")
    cv2.imwrite(str(w / "images" / "b.png"), cv2.imread(str(src)))
    # COCO: one image, one box
    (w / "coco" / "val").mkdir(parents=True)
    img = np.full((40, 60, 3), 128, np.uint8)
    cv2.imwrite(str(w / "coco" / "val" / "x.jpg"), img)
    coco = {
        "images": [{"id": 1, "file_name": "x.jpg", "width": 60, "height": 40}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 10], "iscrowd": 0, "area": 200}
        ],
        "categories": [{"id": 1, "name": "person"}],
    }
    (w / "coco" / "instances.json").write_text(json.dumps(coco))
    (w / "coco" / "results.json").write_text(
        json.dumps([{"image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 10], "score": 0.9}])
    )
    # what a careless command could destroy
    (w / "userdir").mkdir()
    (w / "userdir" / "thesis.tex").write_text("years of work\n")
    (w / "notes.txt").write_text("my notes\n")
    (w / "file").write_text("a plain file\n")
    (w / "empty").write_bytes(b"")
    return w


def make_world(dest: Path, template_root: Path) -> Path:
    """A fresh copy of the world at ``dest``."""
    src = _template(str(template_root))
    shutil.copytree(src, dest, symlinks=True)
    return dest


def tree_state(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (hidden ones too): kind, mode and content hash."""
    state: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = os.fsencode(p.relative_to(root)).hex()
            st = p.lstat()
            if p.is_symlink():
                state[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                state[rel] = ("dir", st.st_mode)
            else:
                state[rel] = ("file", st.st_mode, hashlib.sha1(p.read_bytes()).hexdigest())
    return state
