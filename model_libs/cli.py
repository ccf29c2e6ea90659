"""The one command-line convention of the toolkit: how parsers are built and how errors end a run.

Every command (``python -m model_libs <command>``, the example scripts, the benchmarks) builds
its parser with :func:`make_parser` and runs its body through :func:`run` (or wraps a
``main(argv)`` with :func:`command`). The rule they all share:

- bad input ends the run with exactly one ``error: ...`` line on stderr and exit status 2,
  never a traceback. That covers :class:`~model_libs.errors.ModelLibsError` (whose message
  names the file and the problem), the ``OSError`` a missing, unreadable or unwritable path
  causes, and the ``UnicodeError`` an undecodable file or name causes;
- argparse's own usage errors are one ``error:`` line with exit status 2 as well (not
  argparse's two-line ``usage:`` + ``prog: error:`` form);
- Ctrl-C ends with ``error: interrupted`` and status 130 (the shell's convention for SIGINT).

Anything else is a bug in the toolkit and keeps its traceback.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from .errors import ModelLibsError

PROG = "python -m model_libs"

# Exceptions that bad input (not a bug) raises; each becomes one ``error:`` line.
USER_ERRORS: tuple[type[BaseException], ...] = (ModelLibsError, OSError, UnicodeError)

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors follow the toolkit's one-line convention."""

    def error(self, message: str) -> NoReturn:
        emit_error(f"{self.prog}: {message} (see --help)")
        sys.exit(EXIT_ERROR)


def make_parser(prog: str, description: str | None = None, **kwargs) -> Parser:
    """The toolkit's argument parser; ``prog`` is what ``--help`` shows as the command.

    Subparsers made from it are :class:`Parser` too (argparse creates them with the class
    of their parent), so nested commands follow the same error convention.
    """
    return Parser(prog=prog, description=description, **kwargs)


def describe(exc: BaseException) -> str:
    """The one-line text of a user-facing error (file first where the error names one)."""
    if isinstance(exc, ModelLibsError):
        return str(exc)
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc) or type(exc).__name__
        names = [os.fsdecode(n) for n in (exc.filename, exc.filename2) if n is not None]
        return f"{' -> '.join(names)}: {reason}" if names else reason
    if isinstance(exc, UnicodeDecodeError):
        return f"not valid {exc.encoding} text (byte {exc.start}): {exc.reason}"
    if isinstance(exc, UnicodeError):
        return f"cannot encode text: {exc}"
    return str(exc) or type(exc).__name__


def emit_error(message: str) -> None:
    """Print ``error: message`` to stderr as one line that any terminal can show.

    Names that are not valid UTF-8 arrive as surrogate escapes; printing them raw would
    raise UnicodeEncodeError at the very moment an error is reported, so they are escaped.
    """
    text = "; ".join(line.strip() for line in message.splitlines() if line.strip())
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    sys.stderr.write(f"error: {text}\n")
    sys.stderr.flush()


def guarded(fn: Callable[[], int | None]) -> int:
    """Call ``fn`` and return its exit status; user errors become one ``error:`` line, 2."""
    try:
        return int(fn() or 0)
    except USER_ERRORS as exc:
        emit_error(describe(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        emit_error("interrupted")
        return EXIT_INTERRUPTED


def run(
    argv: Sequence[str] | None,
    build_parser: Callable[[], argparse.ArgumentParser],
    handler: Callable[[argparse.Namespace], int | None],
) -> int:
    """Parse ``argv`` (``sys.argv[1:]`` when None) and run ``handler`` under :func:`guarded`.

    ``--help`` and usage errors leave through ``SystemExit`` as argparse does (status 0 / 2).
    """
    args = build_parser().parse_args(None if argv is None else list(argv))
    return guarded(lambda: handler(args))


def command(main: Callable[[list[str]], int | None]) -> Callable[[Sequence[str] | None], int]:
    """Wrap a ``main(argv) -> status`` so that it follows the error convention."""

    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        args = list(sys.argv[1:] if argv is None else argv)
        return guarded(lambda: main(args))

    return wrapper


def script(main: Callable[[list[str]], int | None]) -> NoReturn:
    """``sys.exit`` with ``main(sys.argv[1:])`` under the convention: the body of a script."""
    sys.exit(command(main)(None))


def bounded(
    kind: type = int,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> Callable[[str], int | float]:
    """An argparse ``type=`` that parses ``kind`` (int or float) and refuses a value outside
    ``[lo, hi]`` (open ends with ``lo_open``/``hi_open``), NaN and infinity, before any work
    starts: ``--batch 0`` or ``--threshold 1.5`` is a usage error, not a wrong answer."""
    import math

    def describe() -> str:
        parts = []
        if lo is not None:
            parts.append(f"{'above' if lo_open else 'at least'} {kind(lo)}")
        if hi is not None:
            parts.append(f"{'below' if hi_open else 'at most'} {kind(hi)}")
        return " and ".join(parts)

    def parse(text: str) -> int | float:
        noun = "a whole number" if kind is int else "a number"
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if (lo is not None and (value <= lo if lo_open else value < lo)) or (
            hi is not None and (value >= hi if hi_open else value > hi)
        ):
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {noun} {describe()}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


# Shared option types.
COUNT = bounded(int, 1)  # --batch, --train, --iters ...: one or more
NONNEGATIVE = bounded(int, 0)  # --draw N: zero allowed
SEED = bounded(int, 0, 2**32 - 1)  # NumPy and Caffe seeds are unsigned 32-bit
PROBABILITY = bounded(float, 0.0, 1.0)  # score thresholds
