# ruff: noqa: E501  (tables of cases read best one per line)
"""The bad-input probe: every command and option class of issue 12, tried as a careless user would.

Each case runs a real command line (``python -m model_libs ...`` through the dispatcher, or a
child process where the failure used to be a crash: SIGBUS, a segfault) against a world of
real inputs and existing outputs, and must end with exit status 2, exactly one ``error:``
line that names the file, no traceback -- and not one byte of the world changed (every
file and folder, hidden ones included, is fingerprinted before and after). The count of
cases per class is what ``test_probe_counts`` prints for the report.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bad_input_world import make_world, tree_state

from model_libs.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
BAD = os.fsdecode(b"caf\xe9")  # a name that is not UTF-8, as Python hands it over from argv


@pytest.fixture(scope="session")
def world_template(tmp_path_factory):
    return tmp_path_factory.mktemp("world_template") / "w"


@pytest.fixture
def world(tmp_path, world_template):
    return make_world(tmp_path / "w", world_template)


def voc(w, *extra, root=None, labelmap=None):
    root, labelmap = root or f"{w}/voc", labelmap or f"{w}/labelmap.prototxt"
    return [
        "convert",
        "voc",
        "--root",
        root,
        "--sets",
        "Synth:test",
        "--labelmap",
        labelmap,
        "--no-progress",
        *extra,
    ]


def coco(w, *extra, annotations=None):
    annotations = annotations or f"{w}/coco/instances.json"
    return [
        "convert",
        "coco",
        "--annotations",
        annotations,
        "--images",
        f"{w}/coco/val",
        "--no-progress",
        *extra,
    ]


def evalvoc(w, *extra, labelmap=None, results=None):
    labelmap, results = labelmap or f"{w}/labelmap.prototxt", results or f"{w}/results"
    voc_set = ["--root", f"{w}/voc", "--set", "Synth:test"]
    return ["eval", "voc", *voc_set, "--labelmap", labelmap, "--results", results, *extra]


def evallmdb(w, lmdb=None):
    gt = ["--lmdb", lmdb or f"{w}/lmdb", "--labelmap", f"{w}/labelmap.prototxt"]
    return ["eval", "voc", *gt, "--results", f"{w}/results"]


def evalcoco(w, *extra, annotations=None, results=None):
    annotations = annotations or f"{w}/coco/instances.json"
    results = results or f"{w}/coco/results.json"
    return ["eval", "coco", "--annotations", annotations, "--results", results, *extra]


def detect(w, *extra, images=None, deploy=None, weights=None):
    net = ["--deploy", deploy or f"{w}/net/deploy.prototxt", "--weights", weights or f"{w}/net/w.caffemodel"]
    return ["detect", *net, "--engine", "opencv", *extra, *(images or [f"{w}/images/a.jpg"])]


def winit(w, *extra, deploy=None):
    return ["weights", "init", "--deploy", deploy or f"{w}/net/deploy.prototxt", *extra]


def job(w, *extra):
    return ["job", "--model", "DSOD300_smallest", "--dataset", "VOC0712", "--data-root", f"{w}/data", *extra]


def compare(w, *extra, b=None):
    return ["eval", "compare", f"{w}/report_a.json", b or f"{w}/report_b.json", *extra]


def synth(out, *extra):
    return ["synthetic", "--out", out, "--train", "2", "--test", "1", *extra]


# Commands with an output, as (name, argv builder taking the output path); the output
# classes below try each of them.
FILE_OUTPUTS = {
    "convert voc --name-size": lambda w, o: voc(w, "--out", f"{w}/new_lmdb", "--name-size", o),
    "eval voc --json": lambda w, o: evalvoc(w, "--json", o),
    "eval coco --json": lambda w, o: evalcoco(w, "--json", o),
    "eval compare --json": lambda w, o: compare(w, "--json", o),
    "detect --json": lambda w, o: detect(w, "--json", o),
    "weights init --out": lambda w, o: winit(w, "--out", o),
    "plot --out": lambda w, o: ["plot", f"{w}/train.log", "--out", o],
}
FOLDER_OUTPUTS = {
    "convert voc --out": lambda w, o: voc(w, "--out", o),
    "convert coco --out": lambda w, o: coco(w, "--out", o),
    "synthetic --out": lambda w, o: synth(o),
    "synthetic --no-lmdb --out": lambda w, o: synth(o, "--no-lmdb"),
    "inspect --draw --out": lambda w, o: ["inspect", f"{w}/lmdb", "--draw", "1", "--out", o],
    "eval voc --plots": lambda w, o: evalvoc(w, "--plots", o),
    "detect --draw": lambda w, o: detect(w, "--draw", o),
    "job --out": lambda w, o: job(w, "--out", o),
}
ALL_OUTPUTS = {**FILE_OUTPUTS, **FOLDER_OUTPUTS}

CASES: list[tuple[str, str, object, str]] = []  # (class, id, argv builder, expected in the error)
for name, build in FILE_OUTPUTS.items():
    CASES.append(
        ("output is a folder, a file is wanted", name, lambda w, b=build: b(w, f"{w}/userdir"), "is a folder")
    )
for name, build in FOLDER_OUTPUTS.items():
    CASES.append(
        ("output is a file, a folder is wanted", name, lambda w, b=build: b(w, f"{w}/notes.txt"), "is a file")
    )
for name, build in ALL_OUTPUTS.items():
    CASES.append(
        ("output lies under a file", name, lambda w, b=build: b(w, f"{w}/file/sub/out"), "is a file, not")
    )
    CASES.append(
        ("output path is not UTF-8", name, lambda w, b=build: b(w, f"{w}/{BAD}/out"), "not valid UTF-8")
    )

# --force and overwriting: never an input, never something the toolkit did not write
FORCE = [
    ("convert voc --out ROOT --force", lambda w: voc(w, "--out", f"{w}/voc", "--force"), "also an input"),
    ("convert voc --out PARENT_OF_ROOT --force", lambda w: voc(w, "--out", f"{w}", "--force"), "holds the input"),
    ("convert voc --out USER_FOLDER --force", lambda w: voc(w, "--out", f"{w}/userdir", "--force"),
     "not a LMDB this toolkit wrote"),
    ("convert voc --out USER_FOLDER", lambda w: voc(w, "--out", f"{w}/userdir"), "already exists"),
    ("convert voc --name-size NOTES --force",
     lambda w: voc(w, "--out", f"{w}/new", "--name-size", f"{w}/notes.txt", "--force"), "not a name/size list"),
    ("convert voc --name-size LABELMAP --force",
     lambda w: voc(w, "--out", f"{w}/new", "--name-size", f"{w}/labelmap.prototxt", "--force"), "also an input"),
    ("convert voc --name-size inside --out",
     lambda w: voc(w, "--out", f"{w}/new", "--name-size", f"{w}/new/ns.txt"), "must not lie inside"),
    ("convert coco --out IMAGES --force", lambda w: coco(w, "--out", f"{w}/coco/val", "--force"), "also an input"),
    ("convert coco --out COCO_ROOT --force", lambda w: coco(w, "--out", f"{w}/coco", "--force"), "holds the input"),
    ("synthetic --out USER_FOLDER --force", lambda w: synth(f"{w}/userdir", "--force"), "not a synthetic set"),
    ("synthetic --out LMDB --force", lambda w: synth(f"{w}/lmdb", "--force"), "not a synthetic set"),
    ("weights init --out DEPLOY", lambda w: winit(w, "--out", f"{w}/net/deploy.prototxt"), "also an input"),
    ("weights init --out NOTES", lambda w: winit(w, "--out", f"{w}/notes.txt"), "not a caffemodel this toolkit"),
    ("eval voc --json RESULTS_JSON",
     lambda w: evalvoc(w, "--json", f"{w}/dets.json", results=f"{w}/dets.json"), "also an input"),
    ("eval voc --json COCO_ANNOTATIONS",
     lambda w: evalvoc(w, "--json", f"{w}/coco/instances.json"), "not a report this toolkit wrote"),
    ("eval compare --json A", lambda w: compare(w, "--json", f"{w}/report_a.json"), "also an input"),
    ("detect --json IMAGE", lambda w: detect(w, "--json", f"{w}/images/a.jpg"), "also an input"),
    ("detect --draw INPUT_FOLDER (PNG inputs)",
     lambda w: detect(w, "--draw", f"{w}/images", images=[f"{w}/images/b.png"]), "would overwrite an input"),
    ("detect --draw onto a foreign file of the same name",
     lambda w: detect(w, "--draw", f"{w}/pics"), "not a drawing this toolkit wrote"),
    ("eval voc --plots onto a foreign file of the same name",
     lambda w: evalvoc(w, "--plots", f"{w}/pics"), "not a plot this toolkit wrote"),
    ("plot --out LOG", lambda w: ["plot", f"{w}/train.log", "--out", f"{w}/train.log"], "also an input"),
    ("plot --out NOTES", lambda w: ["plot", f"{w}/train.log", "--out", f"{w}/notes.txt"], "not a plot this"),
    ("job --out folder with a foreign train.prototxt", lambda w: job(w, "--out", f"{w}/userdir2"),
     "not a job folder this toolkit wrote"),
]  # fmt: skip
CASES += [("--force or overwrite would destroy data", *c) for c in FORCE]

# inputs of the wrong kind, empty, damaged
INPUTS = [
    ("inspect LMDB without data.mdb", lambda w: ["inspect", f"{w}/userdir"], "no data.mdb"),
    ("inspect a text file as LMDB", lambda w: ["inspect", f"{w}/notes.txt"], "not an LMDB"),
    ("inspect an empty file as LMDB", lambda w: ["inspect", f"{w}/empty"], "not an LMDB"),
    ("eval voc --lmdb USER_FOLDER", lambda w: evallmdb(w, f"{w}/userdir"), "no data.mdb"),
    ("detect --deploy CAFFEMODEL", lambda w: detect(w, deploy=f"{w}/net/w.caffemodel"), "binary file"),
    ("detect --weights PROTOTXT", lambda w: detect(w, weights=f"{w}/net/deploy.prototxt"), "is a text file"),
    ("detect --deploy EMPTY", lambda w: detect(w, deploy=f"{w}/empty"), "is empty"),
    ("detect --weights FOLDER", lambda w: detect(w, weights=f"{w}/net"), "is a folder"),
    ("detect an empty image", lambda w: detect(w, images=[f"{w}/empty"]), "image is empty"),
    ("detect a text file as image", lambda w: detect(w, images=[f"{w}/notes.txt"]), "not a readable image"),
    ("detect a folder without images", lambda w: detect(w, images=[f"{w}/userdir"]), "holds no images"),
    ("summary EMPTY", lambda w: ["summary", f"{w}/empty"], "is empty"),
    ("summary FOLDER", lambda w: ["summary", f"{w}/userdir"], "is a folder"),
    ("summary CAFFEMODEL", lambda w: ["summary", f"{w}/net/w.caffemodel"], "binary file"),
    ("summary a text file that is no net", lambda w: ["summary", f"{w}/notes.txt"], "notes.txt"),
    ("weights show PROTOTXT", lambda w: ["weights", "show", f"{w}/net/deploy.prototxt"], "is a text file"),
    ("weights show EMPTY", lambda w: ["weights", "show", f"{w}/empty"], "is empty"),
    ("weights check --deploy CAFFEMODEL",
     lambda w: ["weights", "check", "--deploy", f"{w}/net/w.caffemodel", f"{w}/net/w.caffemodel"], "binary file"),
    ("weights init --deploy LABELMAP",
     lambda w: winit(w, "--out", f"{w}/x.caffemodel", deploy=f"{w}/labelmap.prototxt"), "labelmap.prototxt"),
    ("eval voc --labelmap CAFFEMODEL", lambda w: evalvoc(w, labelmap=f"{w}/net/w.caffemodel"), "w.caffemodel"),
    ("eval voc --labelmap EMPTY", lambda w: evalvoc(w, labelmap=f"{w}/empty"), "empty"),
    ("eval voc --results EMPTY_JSON", lambda w: evalvoc(w, results=f"{w}/empty.json"), "empty.json"),
    ("eval coco --annotations EMPTY", lambda w: evalcoco(w, annotations=f"{w}/empty"), "empty"),
    ("eval coco --results TEXT", lambda w: evalcoco(w, results=f"{w}/notes.txt"), "notes.txt"),
    ("eval compare with a detection list", lambda w: compare(w, b=f"{w}/dets.json"), "dets.json"),
    ("convert voc --labelmap CAFFEMODEL",
     lambda w: voc(w, "--out", f"{w}/x", labelmap=f"{w}/net/w.caffemodel"), "w.caffemodel"),
    ("convert coco --annotations FOLDER", lambda w: coco(w, "--out", f"{w}/x", annotations=f"{w}/coco"), "coco"),
    ("convert voc --root FILE", lambda w: voc(w, "--out", f"{w}/x", root=f"{w}/notes.txt"), "notes.txt"),
    ("plot CAFFEMODEL", lambda w: ["plot", f"{w}/net/w.caffemodel"], "binary file"),
    ("plot a text file that is no log", lambda w: ["plot", f"{w}/notes.txt"], "not a Caffe log"),
    ("plot FOLDER", lambda w: ["plot", f"{w}/userdir"], "is a folder"),
]  # fmt: skip
CASES += [("input damaged, empty or of the wrong kind", *c) for c in INPUTS]

# option ranges, checked before any work
RANGES = [
    ("synthetic --seed -1", lambda w: synth(f"{w}/s", "--seed", "-1"), "--seed"),
    ("synthetic --train 0", lambda w: synth(f"{w}/s", "--train", "0"), "--train"),
    ("synthetic --test -1", lambda w: synth(f"{w}/s", "--test", "-1"), "--test"),
    ("synthetic --train 1.5", lambda w: synth(f"{w}/s", "--train", "1.5"), "--train"),
    ("convert voc --seed -1 --shuffle", lambda w: voc(w, "--out", f"{w}/x", "--shuffle", "--seed", "-1"), "--seed"),
    ("convert voc --workers 0", lambda w: voc(w, "--out", f"{w}/x", "--workers", "0"), "--workers"),
    ("convert coco --workers -2", lambda w: coco(w, "--out", f"{w}/x", "--workers", "-2"), "--workers"),
    ("inspect --limit -1", lambda w: ["inspect", f"{w}/lmdb", "--limit", "-1"], "--limit"),
    ("inspect --limit 0", lambda w: ["inspect", f"{w}/lmdb", "--limit", "0"], "--limit"),
    ("inspect --draw -1", lambda w: ["inspect", f"{w}/lmdb", "--draw", "-1", "--out", f"{w}/d"], "--draw"),
    ("inspect --out without --draw", lambda w: ["inspect", f"{w}/lmdb", "--out", f"{w}/d"], "--out"),
    ("detect --batch 0", lambda w: detect(w, "--batch", "0"), "--batch"),
    ("detect --batch -3", lambda w: detect(w, "--batch", "-3"), "--batch"),
    ("detect --threshold 1.5", lambda w: detect(w, "--threshold", "1.5"), "--threshold"),
    ("detect --threshold -0.1", lambda w: detect(w, "--threshold", "-0.1"), "--threshold"),
    ("detect --threshold nan", lambda w: detect(w, "--threshold", "nan"), "--threshold"),
    ("detect --scale 0", lambda w: detect(w, "--scale", "0"), "--scale"),
    ("detect --scale inf", lambda w: detect(w, "--scale", "inf"), "--scale"),
    ("detect --mean nan 0 0", lambda w: detect(w, "--mean", "nan", "0", "0"), "--mean"),
    ("weights init --seed -1", lambda w: winit(w, "--out", f"{w}/x.caffemodel", "--seed", "-1"), "--seed"),
    ("weights show --limit -1", lambda w: ["weights", "show", f"{w}/net/w.caffemodel", "--limit", "-1"], "--limit"),
    ("weights check --limit 0",
     lambda w: ["weights", "check", "--deploy", f"{w}/net/deploy.prototxt", f"{w}/net/w.caffemodel", "--limit", "0"],
     "--limit"),
    ("eval voc --iou 0", lambda w: evalvoc(w, "--iou", "0"), "--iou"),
    ("eval voc --iou 1.5", lambda w: evalvoc(w, "--iou", "1.5"), "--iou"),
    ("eval voc --iou nan", lambda w: evalvoc(w, "--iou", "nan"), "--iou"),
    ("job --size 0", lambda w: job(w, "--out", f"{w}/j", "--size", "0"), "input size 0"),
    ("job --size -300", lambda w: job(w, "--out", f"{w}/j", "--size", "-300"), "input size -300"),
    ("job --gpus -1", lambda w: job(w, "--out", f"{w}/j", "--gpus", "-1"), "-1"),
]  # fmt: skip
CASES += [("option out of range", *c) for c in RANGES]

# answers that used to be silently wrong
WRONG = [
    ("detect --labelmap for another dataset (21 classes, the net has 6)",
     lambda w: detect(w, "--labelmap", f"{w}/voc_labelmap.prototxt"), "do not fit the deploy net"),
    ("eval voc --prefix that matches nothing", lambda w: evalvoc(w, "--prefix", "comp3_det_val_"),
     "no result files named comp3_det_val_"),
    ("summary num_output 0", lambda w: ["summary", f"{w}/net/num_output_0.prototxt"], "num_output is 0"),
    ("weights init num_output 0",
     lambda w: winit(w, "--out", f"{w}/x.caffemodel", deploy=f"{w}/net/num_output_0.prototxt"), "num_output is 0"),
    ("detect num_output 0", lambda w: detect(w, deploy=f"{w}/net/num_output_0.prototxt"), "num_output is 0"),
    ("eval voc ground truth with an inverted box", lambda w: evalvoc(w), "is inverted"),
    ("eval coco results with a negative width", lambda w: evalcoco(w, results=f"{w}/neg.json"), "negative width"),
]  # fmt: skip
CASES += [("silently wrong answer", *c) for c in WRONG]
# (A failure must not leave a new output either: the "under a file" and "not UTF-8" cases of
# convert voc --name-size show that the new LMDB is not left behind, as the world must be
# unchanged.)


def _prepare(ident: str, w: Path) -> None:
    """Per-case changes to the world before the fingerprint."""
    if ident == "eval voc --results EMPTY_JSON":
        (w / "empty.json").write_bytes(b"")
    elif ident == "eval voc ground truth with an inverted box":
        xml = next((w / "voc" / "Synth" / "Annotations").glob("000003.xml"))
        text = xml.read_text()
        start = text.index("<xmin>") + len("<xmin>")
        end = text.index("</xmin>")
        xml.write_text(text[:start] + "9999" + text[end:])
    elif ident == "eval coco results with a negative width":
        (w / "neg.json").write_text(
            '[{"image_id": 1, "category_id": 1, "bbox": [30, 5, -20, 10], "score": 0.9}]'
        )
    elif "onto a foreign file of the same name" in ident:
        (w / "pics").mkdir()
        (w / "pics" / "a.png").write_text("not a picture: my notes\n")
        (w / "pics" / "pr_all.png").write_text("not a picture: my notes\n")
    elif ident == "job --out folder with a foreign train.prototxt":
        (w / "userdir2").mkdir()
        (w / "userdir2" / "train.prototxt").write_text("\\documentclass{article} my thesis, not a net\n")


def _check(rc: int, err: str, expect: str, before: dict, after: dict) -> list[str]:
    problems = []
    if rc != 2:
        problems.append(f"exit status {rc}")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    if len(errors) != 1:
        problems.append(f"{len(errors)} error lines")
    if "Traceback" in err:
        problems.append("traceback")
    if errors and expect not in errors[0]:
        problems.append(f"error does not say {expect!r}")
    if before != after:
        changed = sorted(set(before) ^ set(after)) + [
            k for k in before if k in after and before[k] != after[k]
        ]
        names = [bytes.fromhex(k).decode("utf-8", "backslashreplace") for k in changed[:5]]
        problems.append(f"the world changed: {names}")
    return problems


@pytest.mark.parametrize("cls, ident, argv, expect", CASES, ids=[f"{c[0]}: {c[1]}" for c in CASES])
def test_bad_input_probe(world, capsys, cls, ident, argv, expect):
    _prepare(ident, world)
    args = argv(world)
    before = tree_state(world)
    if os.environ.get("MODEL_LIBS_PROBE_SUBPROCESS"):  # each case in its own process (crash-proof)
        p = _run(args, world)
        rc, err = p.returncode, p.stderr.decode("utf-8", "replace")
    else:
        cwd = os.getcwd()
        os.chdir(world)  # a relative default (jobs/...) must not land in the repository
        try:
            rc = main(args)
        except SystemExit as exc:  # usage errors leave through argparse, as from a shell
            rc = exc.code
        finally:
            os.chdir(cwd)
        err = capsys.readouterr().err
    problems = _check(rc, err, expect, before, tree_state(world))
    assert not problems, f"{ident}: {problems}\n{err}"


# --------------------------------------------------------------------------- crashes (child processes)


def _run(args: list, cwd: Path, prefix: list | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [*(prefix or []), sys.executable, "-m", "model_libs", *args]
    return subprocess.run(cmd, capture_output=True, cwd=cwd, env=env, timeout=120)


def _damage_lmdb(w: Path, how: str) -> None:
    data = w / "lmdb" / "data.mdb"
    raw = bytearray(data.read_bytes())
    if how == "truncated":
        data.write_bytes(bytes(raw[: len(raw) * 2 // 3]))
    elif how == "overwritten":  # a page header of the B-tree (root page, the newest meta says)
        for off in range(2 * 4096, len(raw), 4096):
            raw[off + 10 : off + 16] = b"\xff" * 6
        data.write_bytes(bytes(raw))
    elif how == "no meta":
        data.write_bytes(b"\x00" * 8192)


CRASH_CASES = [
    ("inspect truncated data.mdb (was SIGBUS)", "truncated", lambda w: ["inspect", f"{w}/lmdb"], "truncated LMDB"),
    ("eval voc --lmdb truncated data.mdb (was SIGBUS)", "truncated", evallmdb, "truncated LMDB"),
    ("inspect overwritten data.mdb (was lmdb.CorruptedError)", "overwritten", lambda w: ["inspect", f"{w}/lmdb"], "damaged LMDB"),
    ("eval voc --lmdb overwritten data.mdb", "overwritten", evallmdb, "damaged LMDB"),
    ("inspect data.mdb of zeros", "no meta", lambda w: ["inspect", f"{w}/lmdb"], "not an LMDB"),
    ("inspect --draw truncated data.mdb", "truncated", lambda w: ["inspect", f"{w}/lmdb", "--draw", "2", "--out", f"{w}/pics"], "truncated LMDB"),
]  # fmt: skip


@pytest.mark.parametrize("ident, how, argv, expect", CRASH_CASES, ids=[c[0] for c in CRASH_CASES])
def test_damaged_lmdb_is_an_error_not_a_crash(world, ident, how, argv, expect):
    _damage_lmdb(world, how)
    before = tree_state(world)
    p = _run(argv(world), world)
    err = p.stderr.decode("utf-8", "replace")
    problems = _check(p.returncode, err, expect, before, tree_state(world))
    assert not problems, f"{ident}: {problems}\n{err}"


def test_non_utf8_image_names_work_and_do_not_crash(world):
    """cv2.imread on such a name segfaulted; now images are read as bytes."""
    bad_dir = Path(os.fsdecode(bytes(world) + b"/imgs_\xff"))
    bad_dir.mkdir()
    shutil.copy(world / "images" / "a.jpg", Path(os.fsdecode(bytes(bad_dir) + b"/\xe9t\xe9.jpg")))
    p = _run(detect(world, "--json", f"{world}/d.json", "--draw", f"{world}/pics", images=[bad_dir]), world)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    import json

    doc = json.loads((world / "d.json").read_text())
    assert doc["images"][0]["image"].endswith("/\\xe9t\\xe9.jpg")
    assert (world / "pics" / os.fsdecode(b"\xe9t\xe9.png")).read_bytes()[:4] == b"\x89PNG"
    # a broken image under such a name is one error line, not a crash
    Path(os.fsdecode(bytes(bad_dir) + b"/\xe9t\xe9.jpg")).write_bytes(b"not a jpeg")
    before = tree_state(world)
    p = _run(detect(world, images=[bad_dir]), world)
    err = p.stderr.decode("utf-8", "replace")
    assert not _check(
        p.returncode, err, "\\xe9t\\xe9.jpg: not a readable image", before, tree_state(world)
    ), err


READONLY_CASES = ["convert voc --out", "synthetic --out", "inspect --draw --out", "eval voc --json",
                  "eval voc --plots", "detect --json", "detect --draw", "weights init --out", "plot --out",
                  "job --out"]  # fmt: skip


@pytest.mark.parametrize("name", READONLY_CASES)
def test_output_in_a_read_only_folder(tmp_path, world_template, name):
    """As an ordinary user: root may write anywhere, so under root the command runs without
    capabilities (``setpriv``), which makes the folder's mode bits apply to it too."""
    w = make_world(tmp_path / "w", world_template)
    ro = w / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    prefix = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and setpriv (util-linux) is missing: root ignores folder modes")
        prefix = [setpriv, "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all", "--"]
    before = tree_state(w)
    try:
        p = _run(ALL_OUTPUTS[name](w, f"{ro}/out"), w, prefix=prefix)
        after = tree_state(w)
    finally:
        ro.chmod(0o755)  # so that pytest can remove it
    err = p.stderr.decode("utf-8", "replace")
    problems = _check(p.returncode, err, "readonly", before, after)
    assert not problems, f"{name}: {problems}\n{err}"


def test_inverted_detection_boxes_are_reported(world, capsys):
    f = world / "results" / "comp4_det_test_circle.txt"
    lines = f.read_text().splitlines()
    image, score, x0, y0, x1, y1 = lines[0].split()
    lines[0] = f"{image} {score} {x1} {y0} {x0} {y1}"  # xmin and xmax swapped
    f.write_text("\n".join(lines) + "\n")
    assert main(evalvoc(world)) == 0
    err = capsys.readouterr().err
    assert f"warning: {f}:1: 1 of {len(lines)} boxes are inverted" in err


def test_probe_counts(capsys):
    """The table for the report: cases tried per class (every case must pass to count)."""
    counts = collections.Counter(c[0] for c in CASES)
    counts["damaged LMDB (child process)"] = len(CRASH_CASES)
    counts["output in a read-only folder (child process)"] = len(READONLY_CASES)
    counts["non-UTF-8 image name (child process)"] = 1
    counts["inverted detection boxes reported"] = 1
    with capsys.disabled():
        print()
        for cls, n in sorted(counts.items()):
            print(f"  {n:4d}  {cls}")
        print(f"  {sum(counts.values()):4d}  cases in all")
    assert sum(counts.values()) >= 150
