"""Fixtures for every folder: the simulator, the plugin built once per run,
and a simulator + backend + ALSA configuration; and the folder markers
(``tests/unit`` is ``unit``, ``tests/sim`` ``sim``, and so on) so that
``-m`` selects by folder as well as by path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.env import PvEnv, Sim

FOLDER_MARKERS = {"unit", "sim", "plugin", "xen", "fuzz"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = item.path.parent.name
        if folder in FOLDER_MARKERS:
            item.add_marker(folder)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Sim]:
    s = Sim(tmp_path)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def plugin_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """libasound_module_pcm_pvplug.so, built once per test run."""
    from alsa_pvplug.glue.build import build_plugin

    return build_plugin(tmp_path_factory.mktemp("plugin"))


@pytest.fixture
def pvenv(tmp_path: Path, plugin_lib: Path) -> Iterator[PvEnv]:
    env = PvEnv(tmp_path, plugin_lib)
    try:
        yield env
    finally:
        env.stop()
