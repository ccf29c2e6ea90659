"""Where the official datasets' files live: the one table the recipes, data scripts and docs read.

Dataset ``D`` lives under a data root (the recipes' ``--data-root``, default ``data``)::

    <root>/<folder>/lmdb/<lmdb>     one LMDB per split (train, test, COCO's test-dev)
    <root>/<folder>/<name_size>     the test list "name height width" that DetectionOutput
                                    and DetectionEvaluate read

Names are the official ones: the DSOD release scripts (DSOD300_pascal.py, DSOD300_pascal++.py,
DSOD300_coco.py, GRP_DSOD320_pascal.py) read ``VOC0712_trainval_lmdb``/``VOC0712_test_lmdb``
with ``data/VOC0712/test_name_size.txt``, ``VOC0712Plus_trainvalplus_lmdb``/
``VOC0712Plus_test_lmdb`` with ``data/VOC0712Plus/test_name_size.txt`` (10,991 VOC12 test
images), and ``coco_train_lmdb``/``coco_minival_lmdb`` with
``data/coco/minival2014_name_size.txt`` (5,000 images); upstream SSD's ``data/coco`` script
also makes ``coco_testdev_lmdb``. COCO is read from the 2017 files: train2017 is the former
trainval35k, val2017 the 5,000 minival2014 images, test-dev2017 the test-dev2015 images.

Label maps ship inside the package (``model_libs/data``); :func:`labelmap_path` finds them.

``python -m model_libs layout`` (:mod:`.cli_layout`) prints this table (the README's copy is
checked against it); ``layout D --data-root R`` prints D's paths under R, and with
``--make SPLITS --source DIR`` converts DIR's images into them (``data/*/create_data.sh``).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import ModelLibsError


@dataclass(frozen=True)
class Split:
    """One LMDB of a dataset and what goes into it."""

    lmdb: str  # folder name under <root>/<folder>/lmdb/
    # VOC: "VOC2007:trainval"-style sets under the VOCdevkit; COCO: (annotations JSON, image
    # folder), both relative to the COCO folder.
    sources: tuple[str, ...]
    name_size: str | None = None  # name/size list under <root>/<folder>/ (test splits)
    images: int | None = None  # the official image count (test splits)
    shuffle: bool = False
    allow_unannotated: bool = False  # VOC12 test has no public annotations


@dataclass(frozen=True)
class Layout:
    """Every file of one official dataset."""

    dataset: str
    folder: str
    kind: str  # "voc" or "coco": which converter reads the sources
    labelmap: str  # file name inside the package's data folder
    splits: dict[str, Split]

    @property
    def train(self) -> Split:
        return self.splits["train"]

    @property
    def test(self) -> Split:
        return self.splits["test"]

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise ModelLibsError(
                f"{self.dataset} has no split {name!r}; choose from {', '.join(self.splits)}"
            )
        return self.splits[name]

    def lmdb_path(self, split: str, root: str | Path) -> Path:
        return Path(root) / self.folder / "lmdb" / self.split(split).lmdb

    def name_size_path(self, split: str, root: str | Path) -> Path | None:
        name = self.split(split).name_size
        return Path(root) / self.folder / name if name else None

    @property
    def labelmap_path(self) -> Path:
        return labelmap_path(self.labelmap)


_VOC07_TEST = Split("VOC0712_test_lmdb", ("VOC2007:test",), name_size="test_name_size.txt", images=4952)

LAYOUTS: dict[str, Layout] = {
    "VOC0712": Layout(
        "VOC0712",
        folder="VOC0712",
        kind="voc",
        labelmap="labelmap_voc.prototxt",
        splits={
            "train": Split("VOC0712_trainval_lmdb", ("VOC2007:trainval", "VOC2012:trainval"), shuffle=True),
            "test": _VOC07_TEST,
        },
    ),
    "VOC0712Plus": Layout(
        "VOC0712Plus",
        folder="VOC0712Plus",
        kind="voc",
        labelmap="labelmap_voc.prototxt",
        splits={
            "train": Split(
                "VOC0712Plus_trainvalplus_lmdb",
                ("VOC2007:trainval", "VOC2007:test", "VOC2012:trainval"),
                shuffle=True,
            ),
            "test": Split(
                "VOC0712Plus_test_lmdb",
                ("VOC2012:test",),
                name_size="test_name_size.txt",
                images=10991,
                allow_unannotated=True,
            ),
        },
    ),
    "coco": Layout(
        "coco",
        folder="coco",
        kind="coco",
        labelmap="labelmap_coco.prototxt",
        splits={
            "train": Split(
                "coco_train_lmdb", ("annotations/instances_train2017.json", "train2017"), shuffle=True
            ),
            "test": Split(
                "coco_minival_lmdb",
                ("annotations/instances_val2017.json", "val2017"),
                name_size="minival2014_name_size.txt",
                images=5000,
            ),
            "test-dev": Split(
                "coco_testdev_lmdb",
                ("annotations/image_info_test-dev2017.json", "test2017"),
                name_size="test-dev2015_name_size.txt",
                images=20288,
            ),
        },
    ),
}


def layout(dataset: str) -> Layout:
    """The layout of an official dataset (``VOC0712``, ``VOC0712Plus`` or ``coco``)."""
    if dataset not in LAYOUTS:
        raise ModelLibsError(f"unknown dataset {dataset!r}; choose one of {', '.join(LAYOUTS)}")
    return LAYOUTS[dataset]


def labelmap_path(name: str) -> Path:
    """Path of a label map shipped in the package (``labelmap_voc.prototxt``, ...)."""
    path = Path(str(resources.files("model_libs") / "data" / name))
    if not path.is_file():
        raise ModelLibsError(f"{path}: no such label map in the installed package")
    return path


def count_listed_images(path: str | Path) -> int:
    """Images in a name/size list (one non-empty line each); errors name the file."""
    p = Path(path)
    try:
        n = sum(1 for line in p.read_text(encoding="utf-8").splitlines() if line.strip())
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLibsError(f"{p}: cannot read the name/size list ({exc})") from None
    if n == 0:
        raise ModelLibsError(f"{p}: the name/size list is empty")
    return n


def markdown_table() -> str:
    """The table as the README shows it (paths under the data root)."""
    rows = [
        "| dataset | split | LMDB | made from | name/size list | images | label map |",
        "|---|---|---|---|---|---|---|",
    ]
    for lay in LAYOUTS.values():
        for name, s in lay.splits.items():
            src = (
                " + ".join(f"`{x}`" for x in s.sources)
                if lay.kind == "voc"
                else "`{}` + `{}/`".format(*s.sources)
            )
            cells = [
                lay.dataset,
                name,
                f"`{lay.folder}/lmdb/{s.lmdb}`",
                src,
                f"`{lay.folder}/{s.name_size}`" if s.name_size else "",
                f"{s.images:,}" if s.images else "",
                f"`{lay.labelmap}`",
            ]
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def make(lay: Layout, splits: list[str], source: str | Path, root: str | Path, **options) -> None:
    """Convert ``source`` (a VOCdevkit or COCO folder) into the LMDBs of ``splits`` under ``root``."""
    for name in splits:
        s = lay.split(name)
        out = lay.lmdb_path(name, root)
        out.parent.mkdir(parents=True, exist_ok=True)
        name_size = lay.name_size_path(name, root)
        common = dict(
            labelmap=lay.labelmap_path,
            name_size=name_size,
            shuffle=s.shuffle,
            seed=options.get("seed", 0),
            force=options.get("force", False),
            workers=options.get("workers"),
        )
        if lay.kind == "voc":
            from .voc import convert_voc

            stats = convert_voc(
                source, ",".join(s.sources), out, allow_unannotated=s.allow_unannotated, **common
            )
        else:
            from .coco import convert_coco

            annotations, images = (Path(source) / x for x in s.sources)
            stats = convert_coco(
                annotations, images, out, skip_crowd=options.get("skip_crowd", False), **common
            )
        print(f"{lay.dataset} {name}: {stats.summary()}")
        if s.images and stats.images != s.images:
            print(f"note: {stats.images:,} images; the official {lay.dataset} {name} set has {s.images:,}")
