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


def clock(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``) for a duration in seconds."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Progress of a training log (either engine's): feed it the log's lines; it shows
    iteration, loss, lr, test mAP, elapsed time and an ETA on ``stream`` - one updating line
    on a terminal; elsewhere (a file, CI) a line at most every ``every`` seconds and at each
    test - and, with ``echo``, the raw lines too. ``log`` is what the lines said so far.

    The ETA is the remaining iterations at the rate measured since the first displayed
    iteration of this run (start-up and a resumed job's earlier iterations do not count).
    """

    def __init__(
        self,
        max_iter: int,
        stream: TextIO | None = None,
        echo: bool = False,
        prefix: str = "",
        every: float = 10.0,
    ) -> None:
        self.max_iter = max_iter
        self.stream = stream or sys.stderr
        self.echo = echo
        self.prefix = prefix
        self.every = every
        self.tty = self.stream.isatty()
        self.parser = LogParser()
        self.started = time.monotonic()
        self._first: tuple[int, float] | None = None  # (iteration, time) of the first display
        self._shown = float("-inf")

    @property
    def log(self) -> TrainLog:
        return self.parser.log

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left at the measured rate; None before two displays."""
        now = time.monotonic() if now is None else now
        it = self.log.last_iter
        if self._first is None or it <= self._first[0]:
            return None
        rate = (it - self._first[0]) / (now - self._first[1])
        return (self.max_iter - it) / rate if rate > 0 else None

    def line(self, now: float | None = None) -> str:
        """The progress line as it stands."""
        now = time.monotonic() if now is None else now
        log = self.log
        it = log.last_iter
        pct = 100.0 * it / self.max_iter if self.max_iter else 0.0
        parts = [f"iter {it}/{self.max_iter} ({pct:4.1f}%)"]
        parts.append(f"loss {log.loss[-1][1]:.4f}" if log.loss else "loss -")
        parts.append(f"lr {log.lr[-1][1]:.3g}" if log.lr else "lr -")
        if log.maps:
            parts.append(f"mAP {log.maps[-1][1]:.4f}")
        eta = self.eta(now)
        timing = f"{clock(now - self.started)} elapsed" + (f", ETA {clock(eta)}" if eta is not None else "")
        return f"{self.prefix}{'  '.join(parts)}  [{timing}]"

    def feed(self, line: str) -> None:
        stream = self.stream
        if self.echo:
            stream.write(line)
        kind = self.parser.feed(line)
        now = time.monotonic()
        if kind == "loss" and self._first is None:
            self._first = (self.log.last_iter, now)
        if kind in ("loss", "test") or (kind == "done" and not self.tty):
            if self.tty and not self.echo:
                stream.write("\r" + self.line(now) + "\x1b[K")
            elif kind in ("test", "done") or now - self._shown >= self.every:
                stream.write(self.line(now) + "\n")
                self._shown = now
            stream.flush()
        elif kind == "snapshot" and not self.echo:
            stream.write(("\n" if self.tty else "") + f"{self.prefix}snapshot {self.log.snapshots[-1]}\n")
            stream.flush()

    def close(self) -> None:
        if self.tty and not self.echo:
            self.stream.write("\n")


def run_torch_job(job, opts, log_file: Path, progress: Progress | None = None, ctx=None) -> TrainLog | None:
    """Train ``job`` (a :class:`~.solver_job.SolverJob`) with the PyTorch engine in this
    process - one rank of a torchrun job, or the whole job - with the trainer's options
    ``opts``; rank 0 appends the log to ``log_file`` and shows ``progress``. Returns what
    the log said (rank 0), else None.

    The trainer is built (nets, weights, data readers checked) before the log is opened:
    a failure there leaves no file behind.
    """
    from ..pytorch.distributed import DistContext
    from ..pytorch.trainer import CaffeLog, Trainer

    ctx = ctx or DistContext.from_env()
    ctx.device(opts.device)  # refuses CUDA without CUDA before the log is opened
    if not ctx.is_root:
        Trainer(job, opts, CaffeLog([], enabled=False), ctx).solve()
        return None
    progress = progress or Progress(job.max_iter)
    early: list[str] = []
    caffe_log = CaffeLog([early.append, progress.feed])
    trainer = Trainer(job, opts, caffe_log, ctx)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a") as log:

        def to_file(line: str) -> None:
            log.write(line)
            log.flush()

        log.writelines(early)
        caffe_log.sinks = [to_file, progress.feed]
        if not progress.prefix:
            where = f"with PyTorch on {opts.device} (log: {log_file})"
            print(f"training {job.solver_file} {where}", file=sys.stderr)
        trainer.solve()
    progress.close()
    return progress.log


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
    progress: Progress | None = None,
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
    progress = progress or Progress(max_iter, stream, echo)
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
