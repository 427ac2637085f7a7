"""One small exception hierarchy for the whole project.

The core raises these; the API maps them to HTTP statuses (see ``api``), the CLI prints their message.
Every message says what was wrong and what to do about it.
"""

from __future__ import annotations


class RRError(Exception):
    """Base class of every error the project raises on purpose."""


class InvalidInput(RRError, ValueError):
    """The caller sent something malformed: a bad field, an empty query, an oversized batch."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class DataFormatError(InvalidInput):
    """A data file is malformed; the message names the file, the line and the field."""

    def __init__(self, path: str, line: int | None, field: str | None, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else path
        msg = f"{where}: {problem}" if field is None else f"{where}: field {field!r}: {problem}"
        super().__init__(msg, field=field)
        self.path = path
        self.line = line


class NotFound(RRError, LookupError):
    """A named thing (collection, expert, job, dataset) does not exist."""


class Conflict(RRError):
    """The thing exists already, or is in a state that forbids the operation."""


class IncompatibleExpert(RRError):
    """An expert was trained on a different base model than the one loaded."""


class StoreError(RRError):
    """The vector store failed; workers retry these."""


class QueueError(RRError):
    """The task queue (the broker) could not take work: nothing of what it refused was queued."""
