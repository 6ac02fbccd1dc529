"""The torch-free runtime's tests: the ONNX recognizer, the command-line tools and the server on an
export made beforehand, compared with what PyTorch gives on the same audio.

Nothing here imports torch, so these tests also run in an install of ``xtrans[runtime]`` alone
(CI's second environment, ``make test-runtime``): there ``XTRANS_RUNTIME_REFS`` names a directory
that ``python -m xtrans.testing.runtime_fixtures DIR`` wrote in the main environment. Without it
(``make test``) the session writes one itself, which needs torch, onnx and eSpeak NG.
"""

import os

import pytest

from xtrans.testing.runtime_fixtures import load_runtime_refs

REFS_ENV = "XTRANS_RUNTIME_REFS"


@pytest.fixture(scope="session")
def runtime_refs(tmp_path_factory):
    """The export, its test signals and their PyTorch results
    (:class:`~xtrans.testing.runtime_fixtures.RuntimeRefs`)."""
    given = os.environ.get(REFS_ENV)
    if given:
        return load_runtime_refs(given)
    for module in ("torch", "onnx", "espeakng_loader"):
        pytest.importorskip(module, reason=f"writing the runtime's references needs {module} (make install); "
                                           f"or set {REFS_ENV} to a directory of python -m "
                                           "xtrans.testing.runtime_fixtures")
    from xtrans.testing.runtime_fixtures import write_runtime_refs

    return write_runtime_refs(tmp_path_factory.mktemp("runtime_refs"))
