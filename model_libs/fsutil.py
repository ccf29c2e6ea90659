"""The one way the toolkit writes outputs.

Every command writes through these functions, so that the same rules hold everywhere:

- **Checked before work starts** (:func:`check_output`): a path that is not valid UTF-8 (the
  toolkit writes paths into prototxts, reports and logs), lies under a file, is a folder where
  a file is wanted (or the reverse), sits in a folder that cannot be written, or is (or
  holds) one of the command's inputs, is refused with one :class:`ModelLibsError` naming it.
- **Temporary name, then rename**: a file is written to ``.NAME.XXXXXXXX.tmp`` beside its
  target and renamed over it; a folder (an LMDB, a dataset) is built in a temporary folder
  and swapped in atomically, so nothing half-written is ever visible at the final path, and a
  replaced output is only gone once its successor is complete.
- **One writer per output**: :class:`OutputLock` takes an exclusive ``flock`` on
  ``.NAME.lock`` beside the output (inside it, for a folder that files are added to); a second
  writer of the same output gets a clear error naming the process that holds it, instead of
  silently replacing its work.
- **Stale temporaries are cleaned**: a run killed with ``kill -9`` leaves its temporary
  behind; the next writer of the same output (holding the lock, so no one else can be using
  it) removes it.
- **``--force`` replaces only what the toolkit wrote**: an existing output is replaced only
  when a ``recognise`` check accepts it as something this toolkit writes (an LMDB, a
  synthetic set, a report of the same kind ...), and never when it is or holds an input.
- **The umask is respected**: temporaries start private (``mkstemp``/``mkdtemp`` make them
  0600/0700) and get ``0666 & ~umask`` (files), ``0777 & ~umask`` (folders, scripts) before
  they are renamed into place.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from .errors import ModelLibsError

PathLike = str | os.PathLike

# A temporary of NAME: ".NAME." + 8 characters of tempfile's alphabet + ".tmp"; the fixed shape
# keeps the temporaries of "a" apart from those of "a.b" when stale ones are cleaned.
_TEMP_TAIL = r"\.[a-z0-9_]{8}\.tmp"
Recognise = Callable[[Path], bool]


# ----------------------------------------------------------------------------- names and modes


def shown(path: PathLike) -> str:
    """``path`` as printable text: bytes that are not UTF-8 appear as ``\\xNN`` escapes."""
    return os.fsdecode(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def is_utf8(path: PathLike) -> bool:
    """True when ``path`` is valid UTF-8 text (a name read from a non-UTF-8 file system is not)."""
    try:
        os.fsdecode(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_umask_lock = threading.Lock()


def umask() -> int:
    """The process umask, read without changing it where the system allows (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _umask_lock:  # elsewhere: set and restore (briefly 0 for this process)
        old = os.umask(0o022)
        os.umask(old)
    return old


def file_mode(executable: bool = False) -> int:
    """The mode a new file gets under the umask (``0666`` or ``0777`` for scripts)."""
    return (0o777 if executable else 0o666) & ~umask()


def dir_mode() -> int:
    """The mode a new folder gets under the umask."""
    return 0o777 & ~umask()


# ----------------------------------------------------------------------------- checks


def _real(path: PathLike) -> str:
    return os.path.realpath(os.fspath(path))


def _is_within(child: str, parent: str) -> bool:
    """``child`` is ``parent`` or lies below it (both resolved)."""
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def _nearest_existing(p: Path) -> Path:
    q = p
    while not q.exists() and not q.is_symlink():
        if q.parent == q:
            break
        q = q.parent
    return q


def check_output(
    path: PathLike,
    *,
    folder: bool = False,
    inputs: Iterable[PathLike | None] = (),
    what: str = "output",
) -> Path:
    """Refuse an output path that cannot be written or would destroy an input; returns it.

    ``folder``: the output is a folder (an LMDB, a dataset, a folder of pictures), else a file.
    ``inputs``: the command's input files and folders; the output must be none of them and
    must not hold any of them. Nothing is created.
    """
    raw = os.fspath(path)
    if raw in ("", b""):
        raise ModelLibsError(f"{what}: empty path")
    p = Path(os.fsdecode(raw))
    if not is_utf8(p):
        raise ModelLibsError(f"{shown(p)}: {what} path is not valid UTF-8; choose a name in UTF-8")
    base = _nearest_existing(p.absolute())
    if base != p.absolute() and not base.is_dir():
        raise ModelLibsError(f"{p}: cannot create {what}: {base} is a file, not a folder")
    if base == p.absolute():
        if folder and not p.is_dir():
            raise ModelLibsError(f"{p}: {what} should be a folder but is a file")
        if not folder and p.is_dir():
            raise ModelLibsError(f"{p}: {what} should be a file but is a folder")
    where = base if base != p.absolute() else p.absolute().parent
    if not os.access(where, os.W_OK | os.X_OK):
        raise ModelLibsError(f"{p}: {what} cannot be written: folder {where} is not writable")
    target = _real(p)
    for inp in inputs:
        if inp is None or os.fspath(inp) in ("", b""):
            continue
        src = _real(inp)
        if src == target:
            raise ModelLibsError(f"{p}: {what} is also an input of this command; choose another path")
        if _is_within(src, target):
            raise ModelLibsError(
                f"{p}: {what} holds the input {shown(inp)}; it would be destroyed, choose another path"
            )
    return p


# ----------------------------------------------------------------------------- locks


# Locks this process holds: lock file -> [fd, depth]. A command that holds the lock of a job
# folder may write files into it through functions that lock it again (re-entrant).
_held: dict[str, list[int]] = {}
_held_lock = threading.Lock()


class OutputLock:
    """An exclusive, non-blocking ``flock`` on ``lock_file`` for the writer of ``target``.

    The lock file holds the owner's pid (for the message a second writer gets) and is removed
    on release. Removing it is safe because an acquirer checks, after locking, that the path
    still names the file it locked, and retries otherwise. Re-entrant within a process.
    """

    def __init__(self, lock_file: Path, target: Path, what: str = "output") -> None:
        self.lock_file = lock_file
        self.target = target
        self.what = what
        self._key = os.path.realpath(lock_file)
        self._owned = False

    def acquire(self) -> OutputLock:
        with _held_lock:
            if self._key in _held:
                _held[self._key][1] += 1
                self._owned = True
                return self
            fd = self._lock()
            _held[self._key] = [fd, 1]
            self._owned = True
        return self

    def _lock(self) -> int:
        for _ in range(50):
            try:
                fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, file_mode())
            except OSError as exc:
                raise ModelLibsError(
                    f"{self.target}: {self.what} cannot be written ({exc.strerror}: {exc.filename})"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_pid(fd)
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    who = f"process {holder}" if holder else "another process"
                    raise ModelLibsError(
                        f"{self.target}: {who} is writing this {self.what} now (lock {self.lock_file}); "
                        "wait for it to finish or choose another path"
                    ) from None
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.lock_file).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # released and removed by its last owner meanwhile: lock the new one
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        raise ModelLibsError(f"{self.target}: could not lock {self.lock_file}")  # pragma: no cover

    def release(self) -> None:
        if not self._owned:
            return
        self._owned = False
        with _held_lock:
            entry = _held.get(self._key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _held[self._key]
            with contextlib.suppress(OSError):
                os.unlink(self.lock_file)
            os.close(entry[0])  # closing drops the flock

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def held_lock_fds() -> list[int]:
    """File descriptors of the locks this process holds. Pass them to a child process that
    writes into the locked outputs (``subprocess.Popen(pass_fds=...)``): the lock then lasts
    as long as the child, even if this process is killed first."""
    with _held_lock:
        return [fd for fd, _ in _held.values()]


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def lock_path(target: Path, inside: bool = False) -> Path:
    """Where the lock of ``target`` lives: ``.NAME.lock`` beside it, or inside the folder."""
    return target / ".model_libs.lock" if inside else target.parent / f".{target.name}.lock"


# ----------------------------------------------------------------------------- stale temporaries


def stale_temporaries(folder: Path, name: str | None = None) -> list[Path]:
    """Temporaries left in ``folder`` by killed writers (of ``name``, or of any output)."""
    pat = re.compile(r"\." + (re.escape(name) if name is not None else r".+") + _TEMP_TAIL + r"\Z")
    try:
        return sorted(folder / f for f in os.listdir(folder) if pat.match(f))
    except OSError:
        return []


def remove_tree_or_file(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            p.unlink()


def _held_elsewhere(lock_file: Path) -> bool:
    """True when another process holds the lock ``lock_file`` (its writer is still running)."""
    if os.path.realpath(lock_file) in _held:
        return False
    try:
        fd = os.open(lock_file, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # also drops the shared lock, if taken
    return False


def clean_stale(folder: Path, name: str | None = None) -> list[Path]:
    """Remove the temporaries in ``folder`` (of ``name``, or of any output) left by writers
    that were killed: those whose output's lock no running process holds."""
    removed = []
    for t in stale_temporaries(folder, name):
        owner = t.name[1 : -len(".XXXXXXXX.tmp")]
        if _held_elsewhere(lock_path(folder / owner)):
            continue
        remove_tree_or_file(t)
        removed.append(t)
    return removed


# ----------------------------------------------------------------------------- atomic writes


def _mkdirs(p: Path) -> list[Path]:
    """Create ``p`` and missing parents with the umask's mode; returns those created, outermost first."""
    missing = []
    q = p
    while not q.exists():
        missing.append(q)
        if q.parent == q:
            break
        q = q.parent
    created = []
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise ModelLibsError(f"{d}: cannot create folder ({exc.strerror})") from None
        created.append(d)
    return created


def _remove_empty(created: list[Path]) -> None:
    for d in reversed(created):
        with contextlib.suppress(OSError):
            d.rmdir()


def ensure_writable_dir(path: PathLike, inputs: Iterable[PathLike | None] = ()) -> Path:
    """Create the output folder ``path`` (and parents) after checking it; returns it."""
    p = check_output(path, folder=True, inputs=inputs, what="output folder")
    _mkdirs(p)
    if not os.access(p, os.W_OK | os.X_OK):
        raise ModelLibsError(f"{p}: output folder is not writable")
    return p


def atomic_write_bytes(path: PathLike, data: bytes, executable: bool = False) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename.

    The file gets the umask's mode (``executable``: as a script). Low level: no lock, no
    checks beyond the system's; commands declare their outputs through :class:`Output`.
    """
    p = Path(path)
    _mkdirs(p.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    except OSError as exc:
        raise ModelLibsError(f"{p}: cannot write ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), file_mode(executable))
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return p


def atomic_write_text(path: PathLike, text: str, executable: bool = False) -> Path:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"), executable)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), os.fspath(a))


def _commit_dir(tmp: Path, p: Path) -> None:
    """Put the finished folder ``tmp`` at ``p``, replacing what is there atomically."""
    if p.exists() or p.is_symlink():
        if _exchange(tmp, p):
            remove_tree_or_file(tmp)  # now the old content; a kill here leaves a stale temporary
            return
        # No atomic exchange: move the old one to a temporary name (cleaned if we die), then rename.
        old = Path(tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent))
        os.rmdir(old)
        os.replace(p, old)
        os.replace(tmp, p)
        remove_tree_or_file(old)
    else:
        os.replace(tmp, p)


def _describe_existing(p: Path, what: str, force: bool, recognise: Recognise | None) -> None:
    """Raise unless the existing ``p`` may be replaced."""
    if not force:
        raise ModelLibsError(f"{p}: already exists (use --force to replace it)")
    if recognise is None or not recognise(p):
        raise ModelLibsError(
            f"{p}: exists and is not a {what} this toolkit wrote; not replacing it (remove it yourself)"
        )


def _is_empty_dir(p: Path) -> bool:
    try:
        return p.is_dir() and not p.is_symlink() and not any(os.scandir(p))
    except OSError:
        return False


@contextlib.contextmanager
def atomic_dir(
    path: PathLike,
    force: bool = False,
    *,
    recognise: Recognise | None = None,
    inputs: Iterable[PathLike | None] = (),
    what: str = "output folder",
) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` atomically.

    Checked first (:func:`check_output`), then locked against other writers of ``path``, and
    the stale temporaries of killed earlier writers are removed. An existing ``path`` (other
    than an empty folder) is an error unless ``force``, and even then it is replaced only if
    ``recognise(path)`` says the toolkit wrote it. On failure the temporary folder is removed
    and ``path`` is untouched.
    """
    p = check_output(path, folder=True, inputs=inputs, what=what)
    created = _mkdirs(p.parent)
    try:
        with OutputLock(lock_path(p), p, what):
            clean_stale(p.parent, p.name)
            if (p.exists() or p.is_symlink()) and not _is_empty_dir(p):
                _describe_existing(p, what, force, recognise)
            tmp = Path(tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent))
            try:
                os.chmod(tmp, dir_mode())
                yield tmp
                _commit_dir(tmp, p)
            except BaseException:
                remove_tree_or_file(tmp)
                raise
    except BaseException:
        _remove_empty(created)
        raise


# ----------------------------------------------------------------------------- declared outputs


class Output:
    """An output a command declares before its work starts: checked, locked, written atomically.

    ``kind="file"``: one file, written with :meth:`write_bytes`/:meth:`write_text`. An
    existing file is replaced only if ``recognise`` accepts it (a file of the kind this output
    writes) -- and, with ``needs_force``, only under ``force``.

    ``kind="folder"``: a folder files are added to (pictures, plots); :meth:`write_bytes`
    with a name writes one file inside it, replacing an existing file of that name only if
    ``recognise`` accepts it.

    Use as a context manager: entering checks and locks (and cleans stale temporaries);
    leaving releases the lock and, after a failure, removes folders it created that stayed
    empty.
    """

    def __init__(
        self,
        path: PathLike,
        *,
        kind: str = "file",
        what: str = "output",
        inputs: Iterable[PathLike | None] = (),
        recognise: Recognise | None = None,
        force: bool = False,
        needs_force: bool = False,
    ) -> None:
        if kind not in ("file", "folder"):
            raise ValueError(kind)
        self.kind = kind
        self.what = what
        self.recognise = recognise
        self.force = force
        self.needs_force = needs_force
        inputs = [i for i in inputs if i is not None and os.fspath(i) not in ("", b"")]
        # A folder files are added to is never replaced, so it may hold inputs; only a file
        # written into it may not be one (checked per file, :meth:`target`).
        self.path = check_output(
            path, folder=kind == "folder", inputs=inputs if kind == "file" else (), what=what
        )
        self._inputs = {_real(i) for i in inputs}
        self._lock: OutputLock | None = None
        self._created: list[Path] = []

    # -- lifetime
    def open(self) -> Output:
        p = self.path
        try:
            if self.kind == "folder":
                self._created = _mkdirs(p)
                self._lock = OutputLock(lock_path(p, inside=True), p, self.what).acquire()
                clean_stale(p)
            else:
                self._created = _mkdirs(p.parent)
                self._lock = OutputLock(lock_path(p), p, self.what).acquire()
                clean_stale(p.parent, p.name)
                if p.exists():
                    self._check_replace(p)
        except BaseException:
            self.close(failed=True)
            raise
        return self

    def close(self, failed: bool = False) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        if failed:
            _remove_empty(self._created)

    def __enter__(self) -> Output:
        return self.open()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(failed=exc_type is not None)

    # -- writing
    def _check_replace(self, target: Path) -> None:
        if target.is_dir():
            raise ModelLibsError(f"{target}: {self.what} should be a file but is a folder")
        if self.needs_force and not self.force:
            raise ModelLibsError(f"{target}: already exists (use --force to replace it)")
        if self.recognise is None or not self.recognise(target):
            raise ModelLibsError(
                f"{target}: exists and is not a {self.what} this toolkit wrote; "
                "not replacing it (remove it or choose another path)"
            )

    def target(self, name: str | None = None) -> Path:
        """The file written: the output itself, or ``name`` inside an output folder."""
        if self.kind == "file":
            return self.path
        if name is None or "/" in name or name in ("", ".", ".."):
            raise ModelLibsError(f"{self.path}: bad file name {name!r} for a file in this folder")
        t = self.path / name
        if _real(t) in self._inputs:
            raise ModelLibsError(f"{t}: would overwrite an input of this command; choose another folder")
        return t

    def check_file(self, name: str | None = None) -> Path:
        """The file :meth:`write_bytes` would write, after checking it may be written (it is
        no input; in a folder, an existing file of that name is one ``recognise`` accepts).
        Commands that know their file names call this for each before their work starts."""
        t = self.target(name)
        if self.kind == "folder" and (t.exists() or t.is_symlink()):
            self._check_replace(t)
        return t

    def write_bytes(self, data: bytes, name: str | None = None, executable: bool = False) -> Path:
        return atomic_write_bytes(self.check_file(name), data, executable)

    def write_text(self, text: str, name: str | None = None, executable: bool = False) -> Path:
        return self.write_bytes(text.encode("utf-8"), name, executable)


# ----------------------------------------------------------------------------- recognisers


def has_magic(*magics: bytes) -> Recognise:
    """A recogniser: the file starts with one of ``magics``."""

    def check(p: Path) -> bool:
        try:
            with open(p, "rb") as f:
                head = f.read(max(len(m) for m in magics))
        except OSError:
            return False
        return any(head.startswith(m) for m in magics)

    return check


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
is_png: Recognise = has_magic(PNG_MAGIC)


def is_json_file(p: Path) -> bool:
    """A recogniser: a readable JSON document (reports, detections)."""
    import json

    try:
        json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True
