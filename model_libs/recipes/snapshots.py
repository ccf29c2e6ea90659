"""Snapshots of a training job, and which one a resume can trust.

A trainer writes ``<prefix>_iter_N.caffemodel`` (the weights) and then a state file
(``<prefix>_iter_N.solverstate`` for Caffe: iteration, the caffemodel it belongs to, the
solver's history blobs). Caffe writes both directly to their final names, so a job killed
during a snapshot leaves a truncated or missing file -- and ``caffe train --snapshot`` on a
truncated solverstate aborts ("Incorrect length of history blobs").

:func:`newest_complete_snapshot` therefore walks the snapshots from the newest and takes the
first *complete* pair: both files parse, the state's iteration is the one in its name, its
``learned_net`` names the pair's caffemodel, and the history holds one blob (two for
Adam/AdaDelta) per caffemodel blob with matching sizes. It says which pair it chose and why
it skipped newer ones. The state check is a parameter, so another trainer (the PyTorch
engine) uses the same chooser with its own state format.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import DecodeError

from ..errors import ModelLibsError
from ..fsutil import shown
from ..proto import caffe_pb2

MODEL_SUFFIX = ".caffemodel"
CAFFE_STATE_SUFFIX = ".solverstate"


@dataclass(frozen=True)
class Snapshot:
    """The files of one snapshot iteration (either may be missing)."""

    iteration: int
    model: Path | None
    state: Path | None

    @property
    def name(self) -> str:
        f = self.model or self.state
        assert f is not None
        return f.name.rsplit(".", 1)[0]


# check(snapshot, caffemodel) -> None, or raises ModelLibsError saying what is wrong
StateCheck = Callable[[Snapshot, caffe_pb2.NetParameter], None]


def list_snapshots(prefix: str | os.PathLike, state_suffix: str = CAFFE_STATE_SUFFIX) -> list[Snapshot]:
    """Every ``<prefix>_iter_N`` that has a caffemodel or a state file, oldest first."""
    prefix = Path(prefix)
    pat = re.compile(
        re.escape(prefix.name)
        + r"_iter_(\d+)("
        + re.escape(MODEL_SUFFIX)
        + "|"
        + re.escape(state_suffix)
        + r")\Z"
    )
    found: dict[int, dict[str, Path]] = {}
    try:
        names = os.listdir(prefix.parent)
    except OSError:
        return []
    for name in names:
        m = pat.match(name)
        if m:
            found.setdefault(int(m.group(1)), {})[m.group(2)] = prefix.parent / name
    return [Snapshot(it, d.get(MODEL_SUFFIX), d.get(state_suffix)) for it, d in sorted(found.items())]


def read_binary_proto(path: Path, message, what: str):
    """Parse a binary protobuf file into ``message`` (a truncated file is an error)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLibsError(f"{shown(path)}: cannot read {what} ({exc.strerror})") from None
    if not data:
        raise ModelLibsError(f"{shown(path)}: {what} is empty")
    try:
        message.ParseFromString(data)
    except DecodeError:
        raise ModelLibsError(f"{shown(path)}: {what} is truncated or damaged (does not parse)") from None
    return message


def _blob_count(blob: caffe_pb2.BlobProto) -> int:
    if blob.HasField("shape"):
        return math.prod(blob.shape.dim)
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        return blob.num * blob.channels * blob.height * blob.width
    return len(blob.data) or len(blob.double_data)


def _stored(blob: caffe_pb2.BlobProto) -> int:
    return len(blob.data) or len(blob.double_data)


def model_blobs(model: caffe_pb2.NetParameter) -> list[caffe_pb2.BlobProto]:
    """The caffemodel's parameter blobs in net order (the order of a solver's history)."""
    return [b for layer in model.layer for b in layer.blobs] + [
        b for layer in model.layers for b in layer.blobs
    ]


def check_caffe_solverstate(snap: Snapshot, model: caffe_pb2.NetParameter) -> None:
    """Caffe's solverstate belongs to the caffemodel and is complete (see module docs)."""
    assert snap.state is not None
    state = read_binary_proto(snap.state, caffe_pb2.SolverState(), "solverstate")
    if state.iter != snap.iteration:
        raise ModelLibsError(
            f"{shown(snap.state)}: holds iteration {state.iter}, its name says {snap.iteration}"
        )
    if state.learned_net:
        learned = Path(state.learned_net)
        candidates = (
            [learned] if learned.is_absolute() else [Path.cwd() / learned, snap.state.parent / learned]
        )
        if not any(c.is_file() for c in candidates):
            raise ModelLibsError(f"{shown(snap.state)}: its caffemodel {state.learned_net} does not exist")
        if snap.model is not None and not any(
            c.is_file() and os.path.samefile(c, snap.model) for c in candidates
        ):
            raise ModelLibsError(
                f"{shown(snap.state)}: belongs to {state.learned_net}, not to {shown(snap.model)}"
            )
    blobs = model_blobs(model)
    history = list(state.history)
    if len(history) not in (len(blobs), 2 * len(blobs)):
        raise ModelLibsError(
            f"{shown(snap.state)}: {len(history)} history blobs for {len(blobs)} parameter blobs "
            "(truncated or from another net)"
        )
    for i, (h, b) in enumerate(zip(history, blobs + blobs)):
        if _stored(h) != _blob_count(b):
            raise ModelLibsError(
                f"{shown(snap.state)}: history blob {i} holds {_stored(h)} values, "
                f"the parameter holds {_blob_count(b)} (truncated or from another net)"
            )


def check_snapshot(snap: Snapshot, state_check: StateCheck | None = check_caffe_solverstate) -> None:
    """Raise :class:`ModelLibsError` unless ``snap`` is complete: a caffemodel whose blobs hold
    the values their shapes promise and (with ``state_check``) a consistent state file."""
    if snap.model is None:
        raise ModelLibsError(f"{snap.name}: no caffemodel")
    model = read_binary_proto(snap.model, caffe_pb2.NetParameter(), "caffemodel")
    blobs = model_blobs(model)
    if not blobs:
        raise ModelLibsError(f"{shown(snap.model)}: caffemodel holds no parameter blobs")
    for i, b in enumerate(blobs):
        if _stored(b) != _blob_count(b):
            raise ModelLibsError(f"{shown(snap.model)}: blob {i} is incomplete (truncated caffemodel)")
    if state_check is not None:
        if snap.state is None:
            raise ModelLibsError(f"{snap.name}: no state file (killed while snapshotting?)")
        state_check(snap, model)


@dataclass
class SnapshotChoice:
    """The snapshot chosen, and the newer ones passed over with the reason."""

    snapshot: Snapshot | None
    skipped: list[tuple[Snapshot, str]] = field(default_factory=list)

    def describe(self) -> str:
        """One line for the user: what is used, what was skipped and why."""
        s = self.snapshot
        what = (
            f"iteration {s.iteration} ({shown(s.state or s.model)})"
            if s is not None
            else "no complete snapshot"
        )
        if not self.skipped:
            return what
        why = "; ".join(f"iteration {k.iteration}: {reason}" for k, reason in self.skipped)
        return f"{what}; skipped newer damaged snapshots: {why}"


def newest_complete_snapshot(
    prefix: str | os.PathLike,
    state_suffix: str = CAFFE_STATE_SUFFIX,
    state_check: StateCheck | None = check_caffe_solverstate,
) -> SnapshotChoice:
    """The newest complete snapshot of ``prefix`` (see module docs), falling back past
    damaged ones. ``state_check=None`` asks only for a complete caffemodel (scoring)."""
    choice = SnapshotChoice(None)
    for snap in reversed(list_snapshots(prefix, state_suffix)):
        try:
            check_snapshot(snap, state_check)
        except ModelLibsError as exc:
            choice.skipped.append((snap, str(exc)))
            continue
        choice.snapshot = snap
        break
    return choice
