"""The one exception type the toolkit raises for bad input.

Every user-facing failure (missing file, malformed prototxt/XML, bad argument, corrupt LMDB
record) is raised as :class:`ModelLibsError` with a message that names the file and the
problem; the command line prints it as a single ``error:`` line and exits with status 2.
"""


class ModelLibsError(Exception):
    """A clear, user-facing error (bad input, missing file, impossible configuration)."""
