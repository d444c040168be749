"""Allowed values, declared once on the config dataclasses and checked when the config is composed,
and which fields are operational: they change how or where work runs, not what it produces, so they
are left out of stage keys (`key_slice`).

    num_candidates: int = bounded(2, ge=1)
    launcher: str = one_of("torchrun", "torchrun", "deepspeed", operational=True)
    base_urls: List[str] = operational(default_factory=list)

`check_fields(cfg)` walks a typed config (dataclasses, and dicts of them) and stops at the first value
outside its declaration with one line naming the key: `synthesis.num_candidates: got 0; expected >= 1`.
Numbers with bounds must also be finite (a NaN threshold compares false with everything).
Rules that tie several fields together live with validate() in deepwriter.config.root.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any, Callable, Optional

from deepwriter.core.errors import ConfigError


def bounded(
    default: Any,
    *,
    ge: Optional[float] = None,
    gt: Optional[float] = None,
    le: Optional[float] = None,
    lt: Optional[float] = None,
    operational: bool = False,
) -> Any:
    """A number within bounds (None stays allowed for Optional fields)."""
    return dataclasses.field(default=default, metadata={"bounds": (ge, gt, le, lt), "operational": operational})


def one_of(default: Any, *choices: Any, operational: bool = False) -> Any:
    return dataclasses.field(default=default, metadata={"choices": tuple(choices), "operational": operational})


def operational(default: Any = dataclasses.MISSING, *, default_factory: Optional[Callable[[], Any]] = None) -> Any:
    """A field that changes how or where work runs, not what it produces (left out of stage keys)."""
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata={"operational": True})
    return dataclasses.field(default=default, metadata={"operational": True})


def key_slice(value: Any) -> Any:
    """The plain view of a typed config that defines outputs: every field but the operational ones."""
    if dataclasses.is_dataclass(value):
        return {
            f.name: key_slice(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not f.metadata.get("operational")
        }
    if isinstance(value, dict):
        return {str(k): key_slice(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [key_slice(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value


def _check(key: str, value: Any, meta: Any) -> None:
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{key}: got {value!r}; expected one of {list(meta['choices'])}")
    if "bounds" not in meta or value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}: got {value!r}; expected a number")
    if not math.isfinite(value):
        raise ConfigError(f"{key}: got {value}; expected a finite number")
    ge, gt, le, lt = meta["bounds"]
    for ok, rule in (
        (ge is None or value >= ge, f">= {ge}"),
        (gt is None or value > gt, f"> {gt}"),
        (le is None or value <= le, f"<= {le}"),
        (lt is None or value < lt, f"< {lt}"),
    ):
        if not ok:
            raise ConfigError(f"{key}: got {value}; expected {rule}")


def check_fields(obj: Any, path: str = "") -> None:
    for f in dataclasses.fields(obj):
        key = f"{path}.{f.name}" if path else f.name
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            check_fields(value, key)
        elif isinstance(value, dict):
            for k, v in value.items():
                if dataclasses.is_dataclass(v):
                    check_fields(v, f"{key}.{k}")
        _check(key, value, f.metadata)
