"""The checkout's layout: `conf/` and `recipes/` at the root, where a user looks first, are links into
the package's `deepwriter/conf/` (the one copy: the wheel carries it as package data), links that git
records as such, so a fresh clone has them too; and every file there is package data of the wheel
(tests/test_wheel_install.py builds the wheel and compares it byte for byte)."""

from __future__ import annotations

import fnmatch
import os
import subprocess

import tomllib

from deepwriter.testing.repo import REPO

LINKS = {"conf": "deepwriter/conf", "recipes": "deepwriter/conf/recipe"}


def _package_data_patterns() -> list:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["deepwriter"]


def carried_by_the_wheel(rel: str) -> bool:
    """Whether setuptools' package-data globs (relative to deepwriter/; `*` stays within one folder)
    take the file."""
    parts = rel.split("/")
    return any(
        len(p.split("/")) == len(parts) and all(fnmatch.fnmatchcase(a, b) for a, b in zip(parts, p.split("/")))
        for p in _package_data_patterns()
    )


def test_conf_and_recipes_at_the_root_are_links_into_the_package():
    for name, target in LINKS.items():
        link = REPO / name
        assert link.is_symlink(), f"{name} is not a link"
        assert os.readlink(link) == target  # relative: it works wherever the checkout lies
        assert link.resolve() == (REPO / target).resolve() and link.resolve().is_dir()
    assert (REPO / "conf" / "config.yaml").read_bytes() == (REPO / "deepwriter" / "conf" / "config.yaml").read_bytes()
    assert sorted(p.name for p in (REPO / "conf" / "recipe").glob("*.yaml")) == sorted(
        p.name for p in (REPO / "recipes").glob("*.yaml")
    )


def test_a_fresh_clone_has_the_links(tmp_path):
    listed = subprocess.run(
        ["git", "ls-files", "-s", *LINKS], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    modes = {line.split("\t")[1]: line.split()[0] for line in listed}
    assert modes == {name: "120000" for name in LINKS}, listed  # git's mode of a symbolic link
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{REPO}", str(clone)], check=True, timeout=120)
    for name, target in LINKS.items():
        assert (clone / name).is_symlink() and os.readlink(clone / name) == target
    assert (clone / "conf" / "recipe" / "demo.yaml").read_text() == (clone / "recipes" / "demo.yaml").read_text()
    assert "defaults:" in (clone / "conf" / "config.yaml").read_text()


def test_every_file_of_conf_is_package_data():
    package = (REPO / "deepwriter").resolve()
    rel = sorted(str(p.relative_to(package)) for p in (REPO / "conf").resolve().rglob("*") if p.is_file())
    assert "conf/config.yaml" in rel and "conf/recipe/demo.yaml" in rel
    assert [r for r in rel if not carried_by_the_wheel(r)] == []
