"""Typed errors shared by every stage.

Every error a user can cause with bad input is a :class:`DataError` (CLI exit code 3) whose
message names the source (file, dataset, attribute, stream) and what was expected and what
was found. Bad command-line usage is a :class:`UsageError` (exit code 2).
"""


class MmodeError(Exception):
    """Base class of every error mmode raises on purpose."""


class UsageError(MmodeError):
    """The command line or a setting asks for something impossible (CLI exit 2)."""


class DataError(MmodeError, ValueError):
    """Input data is malformed, inconsistent or unreadable (CLI exit 3)."""


class FormatError(DataError):
    """A file does not follow the format it claims (missing attribute, wrong dtype, ...)."""


class ProtocolError(DataError):
    """A network peer broke the stream protocol (bad magic, oversize length, truncation)."""


class ModelError(DataError):
    """Model weights or a model card are missing, corrupt or do not match the network."""


def describe(source: object, expected: str, found: object) -> str:
    """One-line message ``"<source>: expected <expected>, found <found>"``."""
    return f"{source}: expected {expected}, found {found}"


def exception_text(exc: BaseException) -> str:
    """``"<type>: <message>"`` of a third-party exception on one line (for ``describe``'s
    ``found``): a message of several lines, as decoders write them, is joined with spaces."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"
