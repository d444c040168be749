"""Allowed values, declared once on the config dataclasses and checked when the config is composed,
and which fields are operational: they change how or where work runs, not what it produces, so they
are left out of stage keys (`key_slice`).

    num_candidates: int = bounded(2, ge=1)
    launcher: str = one_of("torchrun", "torchrun", "deepspeed", operational=True)
    base_urls: List[str] = operational(default_factory=list)

`check_fields(cfg)` walks a typed config (dataclasses, and dicts of them) and stops at the first value
outside its declaration with one line naming the key, the rule it breaks and the whole declared range:
`synthesis.num_candidates: got 1000000; expected <= 64 (allowed: >= 1 and <= 64)`. Counts have upper
bounds that a real run could use, so that nonsense stops before it starts work.
Numbers with bounds must also be finite (a NaN threshold compares false with everything).
Rules that tie several fields together live with validate() in deepwriter.config.root.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any, Callable, Optional

from deepwriter.core.errors import ConfigError

# Seeds reach numpy (transformers' set_seed), which takes 0 .. 2**32 - 1.
SEED_MAX = 2**32 - 1


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
    rules = [
        (value >= ge, f">= {ge}") if ge is not None else None,
        (value > gt, f"> {gt}") if gt is not None else None,
        (value <= le, f"<= {le}") if le is not None else None,
        (value < lt, f"< {lt}") if lt is not None else None,
    ]
    rules = [r for r in rules if r is not None]
    for ok, rule in rules:
        if not ok:
            allowed = f" (allowed: {' and '.join(r for _, r in rules)})" if len(rules) > 1 else ""
            raise ConfigError(f"{key}: got {value}; expected {rule}{allowed}")


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
