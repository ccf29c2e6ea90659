"""Run a Caffe training job: stream its log to a file and show progress while it runs."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from ..errors import ModelLibsError
from ..fsutil import held_lock_fds
from .caffelog import LogParser, TrainLog, caffe_failure


def _progress_line(log: TrainLog, max_iter: int, started: float) -> str:
    it = log.last_iter
    loss = f"{log.loss[-1][1]:.4f}" if log.loss else "-"
    lr = f"{log.lr[-1][1]:.3g}" if log.lr else "-"
    last_map = f"  mAP {log.maps[-1][1]:.4f}" if log.maps else ""
    elapsed = time.monotonic() - started
    pct = 100.0 * it / max_iter if max_iter else 0.0
    return f"iter {it}/{max_iter} ({pct:4.1f}%)  loss {loss}  lr {lr}{last_map}  [{elapsed:.0f}s]"


class Progress:
    """Progress of a training log (either engine's): feed it the log's lines; it shows
    iteration, loss, lr and test mAP on ``stream`` (one updating line on a terminal) and,
    with ``echo``, the raw lines too. ``log`` is what the lines said so far."""

    def __init__(self, max_iter: int, stream: TextIO | None = None, echo: bool = False) -> None:
        self.max_iter = max_iter
        self.stream = stream or sys.stderr
        self.echo = echo
        self.tty = self.stream.isatty()
        self.parser = LogParser()
        self.started = time.monotonic()

    @property
    def log(self) -> TrainLog:
        return self.parser.log

    def feed(self, line: str) -> None:
        stream = self.stream
        if self.echo:
            stream.write(line)
        kind = self.parser.feed(line)
        if kind in ("loss", "test"):
            msg = _progress_line(self.parser.log, self.max_iter, self.started)
            stream.write(("\r" + msg + "\x1b[K") if self.tty and not self.echo else msg + "\n")
            stream.flush()
        elif kind == "snapshot" and not self.echo:
            stream.write(("\n" if self.tty else "") + f"snapshot {self.parser.log.snapshots[-1]}\n")
            stream.flush()

    def close(self) -> None:
        if self.tty and not self.echo:
            self.stream.write("\n")


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def run_caffe(
    cmd: list[str],
    log_file: str | Path,
    max_iter: int,
    cwd: str | Path | None = None,
    echo: bool = False,
    stream: TextIO | None = None,
    on_line: Callable[[str], None] | None = None,
) -> TrainLog:
    """Run ``cmd`` (a ``caffe train`` command), tee its output to ``log_file``.

    Progress (iteration, loss, lr, test mAP) is printed to ``stream`` (stderr by default)
    as it happens; with ``echo`` the raw Caffe lines are printed too. The raw log file is
    always complete. Raises ModelLibsError when Caffe exits non-zero, naming the log and the
    first fatal line Caffe wrote in this run (``Check failed: ...``).
    """
    stream = stream or sys.stderr
    log_path = Path(log_file)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    progress = Progress(max_iter, stream, echo)
    try:
        # Caffe inherits the locks of the outputs it writes into (the job folder): if this
        # process dies first, a second training of the same job is still refused.
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            cwd=cwd,
            pass_fds=held_lock_fds(),
        )
    except OSError as exc:
        raise ModelLibsError(f"cannot start {cmd[0]}: {exc.strerror}") from None
    first_line = _count_lines(log_path)
    with open(log_path, "a") as log:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()
            if on_line:
                on_line(line)
            progress.feed(line)
    rc = proc.wait()
    progress.close()
    if rc != 0:
        raise ModelLibsError(failure_message(rc, log_path, first_line))
    return progress.log


def failure_message(rc: int, log_path: Path, first_line: int = 0) -> str:
    """One line saying why Caffe failed: its first fatal line (``Check failed ...``) from the
    part of ``log_path`` this run wrote (from line ``first_line``), else its last line."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()[first_line:]
    except OSError:
        lines = []
    how = (
        f"was killed by {signal.Signals(-rc).name}"
        if rc < 0 and -rc in signal.valid_signals()
        else f"exited with status {rc}"
    )
    reason = caffe_failure(lines) or next((ln.strip() for ln in reversed(lines) if ln.strip()), "no output")
    return f"{log_path}: caffe {how}: {reason}"
