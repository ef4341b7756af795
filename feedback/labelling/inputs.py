"""What the feedback service takes and refuses: its errors, the checks of text people send, and
the labelled files of upload-data with their report (feedback/labelling/service.py uses them; the
routers turn the errors into HTTP answers: feedback/web/app.py).

Text that people send (labels, names, notes, file names) holding a NUL character is refused
(InvalidText, 422): PostgreSQL cannot store it, and no database should differ. Labels are compared
after normalise_label (surrounding white space removed), wherever they come from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from feedback.settings import redact


class NotFound(LookupError):
    pass


class UnknownLabel(ValueError):
    pass


class ModelChanged(RuntimeError):
    """The predictor serves another model version than the one a stored prediction came from."""


class InvalidText(ValueError):
    """Text a client sent that cannot be stored (a NUL character): 422."""


class DuplicateEvent(LookupError):
    """The predictions of this payload-logger event id are stored already."""


def check_text(value: str | None, what: str) -> str | None:
    """`value` unchanged, or InvalidText when it holds a NUL character."""
    if value is not None and "\x00" in value:
        raise InvalidText(f"{what} holds a NUL character (\\x00), which cannot be stored")
    return value


def normalise_label(label: str) -> str:
    """The one form of a label a client sent (validation, upload-data): white space stripped."""
    return check_text(label, "the label").strip()


def database_problem(exc: BaseException) -> str:
    """One line naming a database failure, for answers: its type and the driver's first line."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines() or [""]
    return redact(f"{type(cause).__name__}: {lines[0][:200]}")


class StorageFailed(Exception):
    """The photo storage failed while a photo was being added (upload-data reports it, goes on)."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class LabelledFile:
    name: str  # as the client sent it: for the report only, never a path
    data: bytes
    label: str


@dataclass
class UploadReport:
    added: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)

    def reject(self, name: str, reason: str) -> None:
        self.rejected.append({"name": name, "reason": reason})
