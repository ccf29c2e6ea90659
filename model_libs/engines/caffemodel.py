"""Read, write, list and check ``.caffemodel`` files without Caffe.

A caffemodel is a binary ``NetParameter`` whose layers carry their parameter blobs
(``BlobProto``). A blob's shape is either the ``shape`` message or, in files written by old
Caffe versions, the legacy 4-D ``num/channels/height/width`` fields; both are read here,
and the legacy form is compared the way Caffe does (the expected shape is left-padded
with 1s to four axes). Values are float32 ``data`` or float64 ``double_data``.

Public API::

    net = read_caffemodel("w.caffemodel")             # caffe_pb2.NetParameter
    write_caffemodel("w.caffemodel", net)             # atomic, deterministic bytes
    weights = weights_dict(net)                       # {layer: [np.ndarray, ...]}
    print(weight_table(net))                          # one row per blob + totals
    report = check(deploy, net)                       # CheckReport; report.ok
    require_match(deploy, net, "w.caffemodel")        # ModelLibsError listing mismatches
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from google.protobuf.message import DecodeError

from ..errors import ModelLibsError
from ..fsutil import atomic_write_bytes
from ..proto import caffe_pb2
from ..summary import load_net, summarize

PathLike = str | os.PathLike


# ----------------------------------------------------------------------------- blobs


def blob_shape(blob: caffe_pb2.BlobProto) -> list[int]:
    """The shape of ``blob``: its ``shape`` message, else the legacy 4-D fields."""
    if blob.HasField("shape"):
        return list(blob.shape.dim)
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        return [blob.num, blob.channels, blob.height, blob.width]
    # Neither form: Caffe treats this as a 1-D blob of the stored values.
    return [len(blob.data) or len(blob.double_data)]


def is_legacy(blob: caffe_pb2.BlobProto) -> bool:
    """True when the blob stores its shape in the legacy num/channels/height/width form."""
    return not blob.HasField("shape")


def blob_array(blob: caffe_pb2.BlobProto, ctx: str = "blob") -> np.ndarray:
    """The blob's values as a float32 array of its shape (``double_data`` is converted)."""
    shape = blob_shape(blob)
    if len(blob.data):
        values = np.asarray(blob.data, dtype=np.float32)
    else:
        values = np.asarray(blob.double_data, dtype=np.float64).astype(np.float32)
    count = math.prod(shape) if shape else 1
    if values.size != count:
        raise ModelLibsError(f"{ctx}: holds {values.size} values but its shape {shape} needs {count}")
    return values.reshape(shape)


def make_blob(array: np.ndarray, legacy: bool = False) -> caffe_pb2.BlobProto:
    """A float32 ``BlobProto`` holding ``array``.

    ``legacy=True`` writes the old num/channels/height/width form (the shape is left-padded
    with 1s to four axes, as Caffe's ``LegacyShape`` does); otherwise the ``shape`` form.
    """
    a = np.ascontiguousarray(array, dtype=np.float32)
    blob = caffe_pb2.BlobProto()
    if legacy:
        if a.ndim > 4:
            raise ModelLibsError(f"a {a.ndim}-D blob has no legacy 4-D form")
        dims = [1] * (4 - a.ndim) + list(a.shape)
        blob.num, blob.channels, blob.height, blob.width = dims
    else:
        blob.shape.SetInParent()  # present even for a 0-axis (scalar) blob
        blob.shape.dim.extend(a.shape)
    blob.data.extend(a.ravel().tolist())
    return blob


def shape_matches(blob: caffe_pb2.BlobProto, expected: Sequence[int]) -> bool:
    """Caffe's ``Blob::ShapeEquals``: exact for the ``shape`` form; legacy blobs compare
    against ``expected`` left-padded with 1s to four axes."""
    if not is_legacy(blob):
        return blob_shape(blob) == list(expected)
    if len(expected) > 4:
        return False
    return blob_shape(blob) == [1] * (4 - len(expected)) + list(expected)


# ----------------------------------------------------------------------------- files


def read_caffemodel(path: PathLike) -> caffe_pb2.NetParameter:
    """Parse a binary caffemodel; a missing or corrupt file is a :class:`ModelLibsError`."""
    from ..inputs import read_bytes

    p = Path(path)
    return parse_caffemodel(read_bytes(p, "caffemodel"), str(p))


def _looks_like_text(data: bytes) -> bool:
    head = data[:4096]
    if not head or b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return any(w in text for w in ("layer", "name:", "input:", "{"))


def parse_caffemodel(data: bytes, name: str = "caffemodel") -> caffe_pb2.NetParameter:
    """Parse caffemodel bytes (see :func:`read_caffemodel`)."""
    net = caffe_pb2.NetParameter()
    if _looks_like_text(data):
        raise ModelLibsError(f"{name}: is a text file (a prototxt?), expected a binary caffemodel")
    try:
        net.ParseFromString(data)
    except DecodeError as exc:
        raise ModelLibsError(f"{name}: not a binary caffemodel (NetParameter): {exc}") from None
    if not data or not (len(net.layer) or len(net.layers)):
        raise ModelLibsError(f"{name}: not a caffemodel: it holds no layers")
    return net


def is_caffemodel(path: Path) -> bool:
    """A file that parses as a caffemodel (what ``weights init --out`` may replace)."""
    try:
        read_caffemodel(path)
    except ModelLibsError:
        return False
    return True


def caffemodel_bytes(net: caffe_pb2.NetParameter) -> bytes:
    """Deterministic serialisation: the same message always gives the same bytes."""
    return net.SerializeToString(deterministic=True)


def write_caffemodel(path: PathLike, net: caffe_pb2.NetParameter) -> Path:
    """Write ``net`` as a binary caffemodel (temporary file + rename)."""
    return atomic_write_bytes(path, caffemodel_bytes(net))


def load_deploy(deploy: caffe_pb2.NetParameter | PathLike) -> caffe_pb2.NetParameter:
    """A deploy NetParameter from a message or a prototxt path."""
    if isinstance(deploy, caffe_pb2.NetParameter):
        return deploy
    return load_net(deploy)


def load_weights(weights: caffe_pb2.NetParameter | PathLike) -> caffe_pb2.NetParameter:
    """A caffemodel NetParameter from a message or a ``.caffemodel`` path."""
    if isinstance(weights, caffe_pb2.NetParameter):
        return weights
    return read_caffemodel(weights)


# ----------------------------------------------------------------------------- iteration


@dataclass
class BlobInfo:
    """One stored blob: its layer, position in the layer, shape and values."""

    layer: str
    type: str
    index: int
    shape: list[int]
    legacy: bool
    array: np.ndarray


def _v1_type(layer) -> str:
    return caffe_pb2.V1LayerParameter.LayerType.Name(layer.type)


def layers_with_blobs(net: caffe_pb2.NetParameter) -> Iterator[tuple[str, str, list]]:
    """(name, type, blobs) for every layer of ``net`` (new and V1 layers) that stores blobs."""
    for layer in net.layer:
        if len(layer.blobs):
            yield layer.name, layer.type, list(layer.blobs)
    for layer in net.layers:
        if len(layer.blobs):
            yield layer.name, _v1_type(layer), list(layer.blobs)


def iter_blobs(net: caffe_pb2.NetParameter) -> Iterator[BlobInfo]:
    """Every stored blob of ``net`` in file order."""
    for name, type_, blobs in layers_with_blobs(net):
        for i, b in enumerate(blobs):
            yield BlobInfo(
                name, type_, i, blob_shape(b), is_legacy(b), blob_array(b, f"layer {name!r} blob {i}")
            )


def weights_dict(net: caffe_pb2.NetParameter) -> dict[str, list[np.ndarray]]:
    """{layer name: [blob arrays]} for every layer that stores blobs."""
    out: dict[str, list[np.ndarray]] = {}
    for info in iter_blobs(net):
        out.setdefault(info.layer, []).append(info.array)
    return out


def weights_net(
    deploy: caffe_pb2.NetParameter, weights: dict[str, list[np.ndarray]], legacy: bool = False
) -> caffe_pb2.NetParameter:
    """A caffemodel NetParameter: ``deploy``'s layers (as Caffe snapshots them) with blobs
    from ``weights`` (layers absent from ``weights`` are stored without blobs)."""
    net = caffe_pb2.NetParameter()
    net.CopyFrom(deploy)
    for layer in net.layer:
        del layer.blobs[:]
        for a in weights.get(layer.name, []):
            layer.blobs.append(make_blob(a, legacy=legacy))
    return net


# ----------------------------------------------------------------------------- summary table


def weight_table(net: caffe_pb2.NetParameter, limit: int | None = None) -> str:
    """A human-readable listing: one row per blob (layer, type, index, shape, count, min,
    max, mean, std), then totals. ``limit`` caps the number of rows printed."""
    rows = [("layer", "type", "#", "shape", "count", "min", "max", "mean", "std")]
    total = n_blobs = 0
    layers = set()
    legacy = 0
    for info in iter_blobs(net):
        a = info.array
        n_blobs += 1
        total += a.size
        layers.add(info.layer)
        legacy += info.legacy
        if limit is None or len(rows) <= limit:
            stats = (
                (f"{a.min():.4g}", f"{a.max():.4g}", f"{a.mean():.4g}", f"{a.std():.4g}")
                if a.size
                else ("-",) * 4
            )
            shape = "x".join(map(str, info.shape)) + (" (legacy)" if info.legacy else "")
            rows.append((info.layer, info.type, str(info.index), shape, f"{a.size:,}", *stats))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    if limit is not None and n_blobs > limit:
        lines.append(f"... {n_blobs - limit} more blobs")
    lines += [
        "-" * len(lines[0]),
        f"net: {net.name or '(unnamed)'}",
        f"layers with blobs: {len(layers)}",
        f"blobs: {n_blobs}" + (f" ({legacy} in legacy 4-D form)" if legacy else ""),
        f"stored values: {total:,} ({total * 4 / 1e6:.1f} MB as float32)",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- checking


@dataclass
class CheckReport:
    """How a caffemodel fits a deploy net, in Caffe's ``CopyTrainedLayersFrom`` terms.

    ``missing``: deploy layers that need blobs but have none in the caffemodel (Caffe would
    silently leave them at their fillers); ``extra``: caffemodel layers with blobs that the
    deploy net lacks (Caffe ignores them; a warning, not an error); ``type_mismatch``,
    ``count_mismatch`` (number of blobs) and ``shape_mismatch`` are errors.
    """

    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    type_mismatch: list[str] = field(default_factory=list)
    count_mismatch: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)
    matched: int = 0

    @property
    def errors(self) -> list[str]:
        """Every problem that makes the caffemodel unusable with the deploy net, in net order."""
        return (
            [f"missing layer {m}" for m in self.missing]
            + self.type_mismatch
            + self.count_mismatch
            + self.shape_mismatch
        )

    @property
    def ok(self) -> bool:
        return not self.errors

    def text(self, limit: int = 10) -> str:
        """A short report: counts, then the first ``limit`` problems of each kind."""
        lines = [f"{self.matched} layers match"]
        for title, items in (
            ("missing from the caffemodel", self.missing),
            ("type mismatch", self.type_mismatch),
            ("blob count mismatch", self.count_mismatch),
            ("blob shape mismatch", self.shape_mismatch),
            ("extra in the caffemodel (ignored)", self.extra),
        ):
            if items:
                lines.append(f"{len(items)} {title}:")
                lines += [f"  {x}" for x in items[:limit]]
                if len(items) > limit:
                    lines.append(f"  ... and {len(items) - limit} more")
        lines.append("OK" if self.ok else "MISMATCH")
        return "\n".join(lines)


def expected_blob_shapes(deploy: caffe_pb2.NetParameter) -> list[tuple[str, str, list[list[int]]]]:
    """(layer, type, blob shapes) for every deploy layer that has parameter blobs, in order."""
    return [(x.name, x.type, x.blob_shapes) for x in summarize(deploy).layers if x.blob_shapes]


def check(
    deploy: caffe_pb2.NetParameter | PathLike, weights: caffe_pb2.NetParameter | PathLike
) -> CheckReport:
    """Compare a caffemodel's layers and blob shapes against a deploy net."""
    return check_expected(expected_blob_shapes(load_deploy(deploy)), load_weights(weights))


def check_expected(
    expected: list[tuple[str, str, list[list[int]]]], weights_p: caffe_pb2.NetParameter
) -> CheckReport:
    """:func:`check` against (layer, type, blob shapes) rows, as
    :func:`expected_blob_shapes` lists them."""
    stored = {name: (type_, blobs) for name, type_, blobs in layers_with_blobs(weights_p)}
    report = CheckReport()
    expected_names = {name for name, _, _ in expected}
    for name, type_, shapes in expected:
        if name not in stored:
            report.missing.append(f"{name!r} ({type_}, {len(shapes)} blobs)")
            continue
        s_type, blobs = stored[name]
        ok = True
        if s_type.upper().replace("_", "") != type_.upper():
            report.type_mismatch.append(f"layer {name!r}: deploy {type_}, caffemodel {s_type}")
            ok = False
        if len(blobs) != len(shapes):
            report.count_mismatch.append(
                f"layer {name!r}: deploy expects {len(shapes)} blobs, caffemodel has {len(blobs)}"
            )
            ok = False
        for i, (b, shape) in enumerate(zip(blobs, shapes)):
            if not shape_matches(b, shape):
                report.shape_mismatch.append(
                    f"layer {name!r} blob {i}: deploy expects {'x'.join(map(str, shape))}, "
                    f"caffemodel has {'x'.join(map(str, blob_shape(b)))}"
                )
                ok = False
        report.matched += ok
    report.extra = [f"{n!r} ({t})" for n, (t, _) in stored.items() if n not in expected_names]
    return report


def require_match(
    deploy: caffe_pb2.NetParameter | PathLike,
    weights: caffe_pb2.NetParameter | PathLike,
    name: str = "caffemodel",
    limit: int = 5,
) -> CheckReport:
    """:func:`check`, raising a :class:`ModelLibsError` that lists the first mismatches."""
    return raise_on_mismatch(check(deploy, weights), name, limit)


def raise_on_mismatch(
    report: CheckReport, name: str = "caffemodel", limit: int = 5, what: str = "the deploy net"
) -> CheckReport:
    """``report``, or a :class:`ModelLibsError` naming ``name`` and the first ``limit``
    problems when it has errors."""
    if not report.ok:
        errs = report.errors
        more = f"\n  ... and {len(errs) - limit} more" if len(errs) > limit else ""
        raise ModelLibsError(
            f"{name}: does not match {what} ({len(errs)} problems; "
            f"{report.matched} layers match):\n  " + "\n  ".join(errs[:limit]) + more
        )
    return report
