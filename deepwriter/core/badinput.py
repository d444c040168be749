"""Bad input records, one way everywhere: in strict mode the first bad record stops the run with one
line `file:line: field 'name': reason`; in lenient mode it is skipped and counted with that reason.

    reject(where, "y", "empty", strict, skipped)      # a check that found a bad value
    with skip_or_raise(skipped): ...                   # a block that raises DataError for a bad record
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional, Type

from deepwriter.core.errors import DeepwriterError

_MESSAGE = re.compile(r"^(?P<where>.*?): field '(?P<field>[^']*)': (?P<reason>.*)$", re.S)


@dataclass
class Skipped:
    where: str  # "file:line" (or "file:row N")
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: field '{self.field}': {self.reason}"


class DataError(DeepwriterError, ValueError):
    """A bad input record in strict mode: `file:line: field 'name': reason`. Built from the three parts,
    or from a message already in that form."""

    def __init__(self, where: str, field_name: Optional[str] = None, reason: Optional[str] = None):
        if field_name is None:
            m = _MESSAGE.match(where)
            message = where
            where, field_name, reason = (m["where"], m["field"], m["reason"]) if m else (where, "", where)
        else:
            message = f"{where}: field '{field_name}': {reason}"
        super().__init__(message)
        self.where, self.field, self.reason = where, field_name, reason

    def skipped(self) -> Skipped:
        return Skipped(self.where, self.field, self.reason)


def reject(
    where: str, field_name: str, reason: str, strict: bool, skipped: List[Skipped], error: Type[DataError] = DataError
) -> None:
    """A bad record: `error` in strict mode, a counted skip in lenient mode."""
    if strict:
        raise error(where, field_name, reason) from None
    skipped.append(Skipped(where, field_name, reason))


class skip_or_raise:
    """`with skip_or_raise(skipped): ...` lets a DataError through (strict: `skipped` is None) or
    records it in `skipped` and skips the rest of the block (lenient)."""

    def __init__(self, skipped: Optional[List[Skipped]]):
        self.skipped = skipped

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None and issubclass(exc_type, DataError) and self.skipped is not None:
            self.skipped.append(exc.skipped())
            return True
        return False
