"""Composing the config as `python -m deepwriter.train` does, and the pre-flight check that reports a
bad config as one line naming the key before any work (or before Hydra takes over the command line)."""

from __future__ import annotations

import re
import sys
from typing import List, Optional

from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from deepwriter.config.root import CONF_DIR, ConfigError, describe_error, register_resolvers, register_schemas, to_typed


def recipe_names() -> List[str]:
    """The recipes of conf/recipe/ (the `recipes/` link at the repository root)."""
    return sorted(p.stem for p in (CONF_DIR / "recipe").glob("*.yaml"))


def user_overrides(argv: List[str]) -> List[str]:
    """The `key=value` overrides of a command line, without Hydra's own flags."""
    return [
        a
        for a in argv
        if "=" in a and not a.startswith("-") and not a.startswith("hydra.") and not a.startswith("hydra/")
    ]


# Names of the command line that were renamed, old -> new; each old one still works for one release,
# with one line saying what to write instead. The cost plan's hardware was `fleet`, the word the run's
# managed servers keep.
RENAMED = {"fleet@plan.fleet": "hardware@plan.hardware", "plan.fleet": "plan.hardware"}


# eval.benchmarks.<name>.<key>: the entries are composed untyped (each is typed by its kind's schema in
# config.root.to_typed), so Hydra knows only the keys an entry's YAML writes; `++` (add or override)
# lets the command line set any other key of the entry's schema without `+`, as before.
_BENCHMARK_KEY = re.compile(r"^eval\.benchmarks\.[^.=]+\.")


def renamed_overrides(argv: List[str]) -> List[str]:
    """The command line with every renamed key or group written the new way, one line to stderr for each,
    and a key of an eval.benchmarks entry set as `++` (add or override: config.root.to_typed checks it)."""
    out = []
    for a in argv:
        sign = a[: len(a) - len(a.lstrip("+~"))]
        key, eq, value = a[len(sign) :].partition("=")
        if not sign and eq and _BENCHMARK_KEY.match(key):
            a = f"++{a}"
        for old, new in RENAMED.items():
            if key == old or key.startswith(old + "."):
                fixed = f"{sign}{new}{key[len(old) :]}{eq}{value}"
                print(
                    f"deepwriter: {a!r} is deprecated (removed in the next release): write {fixed!r}", file=sys.stderr
                )
                a = fixed
                break
        out.append(a)
    return out


def compose(overrides: List[str]) -> DictConfig:
    """Compose the config the way @hydra.main would (used by the pre-flight check and the tests)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_schemas()
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return hydra_compose(config_name="config", overrides=renamed_overrides(overrides))


def preflight(argv: List[str]) -> Optional[str]:
    """Compose and type-check once, returning a one-line error (or None) before Hydra takes over."""
    overrides = user_overrides(argv)
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if key == "recipe" and value not in recipe_names():
            return f"recipe: unknown recipe {value!r}; expected one of {recipe_names()} (files in recipes/)"
    try:
        to_typed(compose(overrides))
    except ConfigError as exc:
        return str(exc)
    except (HydraException, OmegaConfBaseException) as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, OmegaConfBaseException) else exc
        line = describe_error(cause).splitlines()[0]
        missing = re.search(r"Could not find '([^/']+)/([^']+)'", line)
        if missing:
            group = missing.group(1)
            options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
            line = f"{group}: unknown option {missing.group(2)!r}; expected one of {options} (files in conf/{group}/)"
        return line
    return None
