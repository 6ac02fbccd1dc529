"""Suite-wide settings: one intra-op thread (tiny models are dominated by per-op overhead, and a
busy 2-core machine makes multi-threaded tiny ops 20x slower), the `slow` marker, and the tests'
own speech (synthesised once per session) and a cache folder of the session's own."""

import os
from pathlib import Path

import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long end-to-end tests (still part of the default suite)")


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True, scope="session")
def _own_cache_dir(tmp_path_factory):
    """Simulated rooms kept on disk (xtrans.data.augment.reverb.cached_rooms) go to a folder of this
    session, not the user's ~/.cache; the recipes' processes started by the tests share it."""
    previous = os.environ.get("XTRANS_CACHE_DIR")
    os.environ["XTRANS_CACHE_DIR"] = str(tmp_path_factory.mktemp("xtrans_cache"))
    yield
    if previous is None:
        os.environ.pop("XTRANS_CACHE_DIR", None)
    else:
        os.environ["XTRANS_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def spoken_digits(tmp_path_factory) -> Path:
    """An FSDD-shaped folder of isolated digits spoken by eSpeak NG voices, 8 kHz, also a Kaldi
    data directory (:mod:`xtrans.testing.speech_fixtures`); the same audio on every run."""
    pytest.importorskip("espeakng_loader", reason="the tests' speech needs eSpeak NG: make install, or "
                                                  "pip install -e '.[synth]'")
    from xtrans.testing.speech_fixtures import write_spoken_digits

    return write_spoken_digits(tmp_path_factory.mktemp("spoken_digits"))
