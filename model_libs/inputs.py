"""The one way the toolkit opens inputs: files, folders, images.

Every reader goes through these functions so that a missing, unreadable or wrong-kind input
is one :class:`ModelLibsError` naming the file, never a traceback or a crash:

- file names are used as the operating system gives them (``str`` with surrogate escapes for
  bytes that are not UTF-8) and opened by Python, never handed to a C library that would
  re-encode them (OpenCV's ``imread`` crashes on such a name); images are read as bytes and
  decoded with ``cv2.imdecode``;
- a folder where a file is expected (and the reverse), an empty file and a file of another
  kind (a caffemodel given as a prototxt ...) are named as such;
- LMDBs are opened through :mod:`model_libs.datasets.lmdb_io`, which validates the database
  file before mapping it (a truncated ``data.mdb`` would otherwise kill the process with
  SIGBUS).

Names are printed with :func:`model_libs.fsutil.shown`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import ModelLibsError
from .fsutil import shown

PathLike = str | os.PathLike


def require_file(path: PathLike, what: str = "input file") -> Path:
    """``path`` as a Path after checking it names an existing, readable regular file."""
    p = Path(path)
    if not p.exists():
        raise ModelLibsError(f"{shown(p)}: {what} not found")
    if p.is_dir():
        raise ModelLibsError(f"{shown(p)}: {what} is a folder, expected a file")
    if not os.access(p, os.R_OK):
        raise ModelLibsError(f"{shown(p)}: {what} is not readable")
    return p


def require_folder(path: PathLike, what: str = "input folder") -> Path:
    """``path`` as a Path after checking it names an existing folder."""
    p = Path(path)
    if not p.exists():
        raise ModelLibsError(f"{shown(p)}: {what} not found")
    if not p.is_dir():
        raise ModelLibsError(f"{shown(p)}: {what} is a file, expected a folder")
    return p


def read_bytes(path: PathLike, what: str = "input file", allow_empty: bool = False) -> bytes:
    """The content of a file; missing, folder, unreadable or (unless allowed) empty is an error."""
    p = require_file(path, what)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ModelLibsError(f"{shown(p)}: cannot read {what} ({exc.strerror})") from None
    if not data and not allow_empty:
        raise ModelLibsError(f"{shown(p)}: {what} is empty")
    return data


def read_text(path: PathLike, what: str = "input file", allow_empty: bool = False) -> str:
    """A UTF-8 text file; binary content (NUL bytes, invalid UTF-8) is named as such."""
    data = read_bytes(path, what, allow_empty)
    if b"\x00" in data[:65536]:
        raise ModelLibsError(f"{shown(path)}: {what} is a binary file, expected text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelLibsError(
            f"{shown(path)}: {what} is not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x})"
        ) from None


def decode_image(data: bytes, where: str) -> np.ndarray:
    """Encoded image bytes -> BGR uint8 array; anything OpenCV cannot decode is an error."""
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if img is None:
        raise ModelLibsError(f"{where}: not a readable image (unknown format, corrupt or truncated)")
    return img


def read_image(path: PathLike) -> np.ndarray:
    """A BGR uint8 image from a file (any name the file system allows)."""
    return decode_image(read_bytes(path, "image"), shown(path))
