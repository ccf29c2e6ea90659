"""Read Caffe training logs: iterations, loss, learning rate, test mAP.

Works on the log a running job writes line by line (``LogParser.feed``) and on a finished
log file (``parse_log``); ``plot_log`` draws loss, learning rate and mAP against iteration.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ModelLibsError

_LOSS = re.compile(r"Iteration (\d+)(?: \([^)]*\))?, loss = ([-+0-9.eEnaif]+)")
_LR = re.compile(r"Iteration (\d+), lr = ([-+0-9.eE]+)")
_TESTING = re.compile(r"Iteration (\d+), Testing net")
_TEST_OUT = re.compile(r"Test net output #\d+: (\S+) = ([-+0-9.eEnaif]+)")
_SNAPSHOT = re.compile(r"Snapshotting (?:solver state )?to (?:binary proto file )?(\S+)")
# glog's lines: "F0101 12:00:00.123456  4242 solver.cpp:123] Check failed: ..." (newer glog
# prints the year too: "F20260101 12:00:00.123456 ...")
_GLOG = re.compile(r"^[IWEF](?:\d{8}|\d{4}) \d\d:\d\d:\d\d\.\d+\s+\d+ ")
_FATAL = re.compile(r"^F(?:\d{8}|\d{4}) \d\d:\d\d:\d\d\.\d+\s+\d+ (.*)$")


@dataclass
class TrainLog:
    """What a Caffe log says so far."""

    loss: list[tuple[int, float]] = field(default_factory=list)
    lr: list[tuple[int, float]] = field(default_factory=list)
    test: list[tuple[int, str, float]] = field(default_factory=list)  # (iter, output, value)
    snapshots: list[str] = field(default_factory=list)
    done: bool = False
    last_iter: int = 0

    @property
    def maps(self) -> list[tuple[int, float]]:
        return [(i, v) for i, name, v in self.test if name == "detection_eval"]


class LogParser:
    """Incremental parser: feed lines, read the :class:`TrainLog`; ``feed`` says what changed."""

    def __init__(self) -> None:
        self.log = TrainLog()
        self._testing_iter = 0

    def feed(self, line: str) -> str | None:
        """Parse one line; return ``"loss"``, ``"lr"``, ``"test"``, ``"snapshot"``, ``"done"``."""
        if m := _LOSS.search(line):
            it = int(m.group(1))
            self.log.loss.append((it, float(m.group(2))))
            self.log.last_iter = max(self.log.last_iter, it)
            return "loss"
        if m := _LR.search(line):
            self.log.lr.append((int(m.group(1)), float(m.group(2))))
            return "lr"
        if m := _TESTING.search(line):
            self._testing_iter = int(m.group(1))
            self.log.last_iter = max(self.log.last_iter, self._testing_iter)
            return None
        if (m := _TEST_OUT.search(line)) and "Train net" not in line:
            self.log.test.append((self._testing_iter, m.group(1), float(m.group(2))))
            return "test"
        if m := _SNAPSHOT.search(line):
            self.log.snapshots.append(m.group(1))
            return "snapshot"
        if "Optimization Done" in line:
            self.log.done = True
            return "done"
        return None


def caffe_failure(lines: Iterable[str]) -> str | None:
    """Why Caffe stopped: the first glog fatal (``F...``) line or ``Check failed`` line of its
    log, without glog's time stamp (``solver.cpp:123] Check failed: ...``); None if none."""
    for line in lines:
        line = line.rstrip("\n")
        if m := _FATAL.match(line):
            return m.group(1).strip()
        if "Check failed" in line:
            return line.strip()
    return None


def parse_log(path: str | Path) -> TrainLog:
    """Parse a whole Caffe log file."""
    from ..inputs import read_bytes

    p = Path(path)
    data = read_bytes(p, "log", allow_empty=True)
    if b"\x00" in data[:65536]:
        raise ModelLibsError(f"{p}: is a binary file, not a Caffe log")
    text = data.decode("utf-8", errors="replace")
    parser = LogParser()
    glog = 0
    for line in text.splitlines():
        parser.feed(line)
        glog += bool(_GLOG.match(line))
    if not glog:
        raise ModelLibsError(f"{p}: not a Caffe log (no line in glog's format)")
    return parser.log


def log_table(log: TrainLog) -> str:
    """One row per displayed iteration: iteration, loss, lr, and test mAP where measured."""
    lr = dict(log.lr)
    maps = dict(log.maps)
    iters = sorted({i for i, _ in log.loss} | set(maps))
    loss = dict(log.loss)
    rows = ["iteration        loss          lr     mAP"]
    for i in iters:
        ls = f"{loss[i]:10.4f}" if i in loss else " " * 10
        lrs = f"{lr[i]:10.3g}" if i in lr else " " * 10
        ms = f"{maps[i]:8.4f}" if i in maps else ""
        rows.append(f"{i:9d}  {ls}  {lrs}  {ms}")
    return "\n".join(rows)


def plot_log(log: TrainLog, out_png: str | Path, title: str = "", inputs: Iterable = ()) -> Path:
    """Plot loss (log scale), learning rate and test mAP against iteration into one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..fsutil import Output, is_png

    fig, axes = plt.subplots(3, 1, figsize=(7, 8), sharex=True)
    if log.loss:
        x, y = zip(*log.loss)
        axes[0].plot(x, y, color="tab:red")
        if min(y) > 0:
            axes[0].set_yscale("log")
    axes[0].set_ylabel("train loss")
    if log.lr:
        x, y = zip(*log.lr)
        axes[1].step(x, y, where="post", color="tab:blue")
    axes[1].set_ylabel("learning rate")
    if log.maps:
        x, y = zip(*log.maps)
        axes[2].plot(x, y, "o-", color="tab:green")
        axes[2].set_ylim(0, 1)
    axes[2].set_ylabel("test mAP")
    axes[2].set_xlabel("iteration")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title or "Caffe training log")
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    with Output(out_png, what="plot", inputs=inputs, recognise=is_png) as out:
        return out.write_bytes(buf.getvalue())
