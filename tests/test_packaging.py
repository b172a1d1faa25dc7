"""The distribution lists every package: a sub-package missing from pyproject.toml works in the
editable development install but is absent from `pip install .` (the Docker image)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _packages_on_disk() -> set[str]:
    found: set[str] = set()
    roots = {
        "pipeline": ROOT / "pipeline",
        "bot": ROOT / "bot",
        "cogs": ROOT / "cogs",
        "web": ROOT / "web",
        "devkit": ROOT / "tests" / "kit",
    }
    for name, directory in roots.items():
        for init in directory.rglob("__init__.py"):
            relative = init.parent.relative_to(directory)
            found.add(".".join((name, *relative.parts)))
    return found


def test_every_package_directory_is_in_the_distribution() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(config["packages"]) == _packages_on_disk()
    assert config["package-dir"] == {"devkit": "tests/kit"}


def test_docker_image_copies_every_package_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for source in ("pipeline", "bot", "cogs", "web", "tests/kit"):
        assert f" {source} ./{source}\n" in dockerfile, source
