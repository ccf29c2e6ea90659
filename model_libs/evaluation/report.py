"""Reports: per-class tables (text / JSON), precision–recall PNGs, and run comparisons.

A report is a plain JSON-able dict with at least ``{"mAP": float|None, "ap": {class: float|None}}``
(the format ``eval --json`` writes); VOC reports add ``npos``/``ndet``/``metric``, COCO
reports add ``stats`` (the 12 pycocotools numbers) and ``ap50``.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ModelLibsError
from ..fsutil import atomic_write_text
from .coco import CocoEvaluation
from .voc import VocEvaluation


def voc_report(ev: VocEvaluation, **extra: Any) -> dict[str, Any]:
    """JSON-able report of a VOC evaluation."""
    rep: dict[str, Any] = {
        "mAP": ev.mAP,
        "ap": ev.ap,
        "kind": "voc",
        "metric": ev.metric,
        "iou_threshold": ev.iou_threshold,
        "npos": {c: r.npos for c, r in ev.classes.items()},
        "ndet": {c: r.ndet for c, r in ev.classes.items()},
    }
    rep.update(extra)
    return rep


def coco_report(ev: CocoEvaluation, **extra: Any) -> dict[str, Any]:
    """JSON-able report of a COCO evaluation (``mAP`` is AP@[.5:.95])."""
    rep: dict[str, Any] = {"mAP": ev.mAP, "ap": ev.ap, "kind": "coco", "ap50": ev.ap50, "stats": ev.stats}
    rep.update(extra)
    return rep


def _fmt(v: float | None, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v * 100:+.2f}" if signed else f"{v * 100:.2f}"


def format_table(report: Mapping[str, Any], title: str | None = None) -> str:
    """Per-class text table (AP in percent), followed by mAP (and COCO stats if present)."""
    ap: Mapping[str, float | None] = report["ap"]
    width = max([len("class"), len("mAP")] + [len(c) for c in ap])
    extra = [k for k in ("npos", "ndet") if k in report]
    head = f"{'class':<{width}}  {'AP':>7}" + "".join(f"  {k:>8}" for k in extra)
    lines = [title] if title else []
    lines += [head, "-" * len(head)]
    for c, v in ap.items():
        lines.append(f"{c:<{width}}  {_fmt(v):>7}" + "".join(f"  {report[k].get(c, ''):>8}" for k in extra))
    lines.append("-" * len(head))
    lines.append(f"{'mAP':<{width}}  {_fmt(report['mAP']):>7}")
    if "stats" in report:
        lines.append("")
        lines += [f"{k:<10} {v:.4f}" for k, v in report["stats"].items()]
    return "\n".join(lines) + "\n"


def report_json(report: Mapping[str, Any]) -> str:
    """``report`` as the indented JSON text ``eval --json`` writes."""
    return json.dumps(report, indent=2, sort_keys=False) + "\n"


def write_json(path: str | os.PathLike, report: Mapping[str, Any]) -> Path:
    """Write ``report`` as indented JSON, atomically."""
    return atomic_write_text(path, report_json(report))


def is_report(path: Path) -> bool:
    """A report or comparison this toolkit wrote (a JSON object with ``mAP``): what
    ``--json`` may replace -- never another JSON file, such as annotations."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and "mAP" in doc


def load_report(path: str | os.PathLike) -> dict[str, Any]:
    """Read a report written by ``eval --json`` (checks it has ``mAP`` and ``ap``)."""
    p = Path(path)
    try:
        rep = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelLibsError(f"{p}: cannot read report ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise ModelLibsError(f"{p}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(rep, dict) or "ap" not in rep or not isinstance(rep["ap"], dict):
        raise ModelLibsError(f'{p}: not an evaluation report (needs "mAP" and "ap")')
    for c, v in rep["ap"].items():
        if v is not None and not isinstance(v, (int, float)):
            raise ModelLibsError(f"{p}: ap[{c!r}] is {v!r}, expected a number or null")
    rep.setdefault("mAP", None)
    return rep


def compare_reports(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Per-class ``{"a", "b", "delta"}`` (delta = b - a) over the union of classes, plus mAP.

    A class missing from one side, or with AP ``None``, has delta ``None``.
    """
    classes = list(a["ap"]) + [c for c in b["ap"] if c not in a["ap"]]

    def delta(x: float | None, y: float | None) -> float | None:
        return None if x is None or y is None else y - x

    rows = {
        c: {"a": a["ap"].get(c), "b": b["ap"].get(c), "delta": delta(a["ap"].get(c), b["ap"].get(c))}
        for c in classes
    }
    return {
        "classes": rows,
        "mAP": {"a": a.get("mAP"), "b": b.get("mAP"), "delta": delta(a.get("mAP"), b.get("mAP"))},
    }


def format_comparison(cmp: Mapping[str, Any], name_a: str = "A", name_b: str = "B") -> str:
    """Text table of :func:`compare_reports` (AP in percent)."""
    rows = cmp["classes"]
    width = max([len("class")] + [len(c) for c in rows])
    wa, wb = max(7, len(name_a)), max(7, len(name_b))
    head = f"{'class':<{width}}  {name_a:>{wa}}  {name_b:>{wb}}  {'delta':>7}"
    lines = [head, "-" * len(head)]
    for c, r in [*rows.items(), ("mAP", cmp["mAP"])]:
        if c == "mAP":
            lines.append("-" * len(head))
        lines.append(
            f"{c:<{width}}  {_fmt(r['a']):>{wa}}  {_fmt(r['b']):>{wb}}  {_fmt(r['delta'], signed=True):>7}"
        )
    return "\n".join(lines) + "\n"


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def plot_pr_curves(ev: VocEvaluation, out_dir: str | os.PathLike) -> list[Path]:
    """One ``pr_<class>.png`` per class plus ``pr_all.png``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from ..fsutil import Output, is_png

    written: list[Path] = []
    folder = Output(out_dir, kind="folder", what="plot", recognise=is_png).open()

    def save(fig: Figure, name: str) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        written.append(folder.write_bytes(buf.getvalue(), name))

    try:
        names = [f"pr_{_safe_name(c)}.png" for c in ev.classes] + ["pr_all.png"]
        for name in names:  # all of them may be written, before the first is
            folder.check_file(name)
        fig_all = Figure(figsize=(7, 6))
        ax_all = fig_all.add_subplot()
        for c, r in ev.classes.items():
            fig = Figure(figsize=(5, 4))
            ax = fig.add_subplot()
            ax.plot(r.recall, r.precision, "-", lw=1.5)
            ax.set(
                xlim=(0, 1),
                ylim=(0, 1.02),
                xlabel="recall",
                ylabel="precision",
                title=f"{c}: AP {_fmt(r.ap)} ({ev.metric})",
            )
            ax.grid(True, alpha=0.3)
            save(fig, f"pr_{_safe_name(c)}.png")
            ax_all.plot(r.recall, r.precision, "-", lw=1, label=f"{c} {_fmt(r.ap)}")
        ax_all.set(
            xlim=(0, 1),
            ylim=(0, 1.02),
            xlabel="recall",
            ylabel="precision",
            title=f"mAP {_fmt(ev.mAP)} ({ev.metric})",
        )
        ax_all.grid(True, alpha=0.3)
        if ev.classes:
            ax_all.legend(fontsize=6, ncol=2, loc="lower left")
        save(fig_all, "pr_all.png")
    finally:
        folder.close()
    return written
