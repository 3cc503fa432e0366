"""Shared fixtures: the golden cases in ../shared (beside the repository, as CI has them).

This file alone decides where the golden cases are: ``SEQNET_SHARED``, else ``../shared``. Tests
reach them through the ``shared`` fixture. Locally a test that needs them skips with the reason
when they are absent; in CI (``CI`` set, as ``.ci/run`` does) the whole run fails at the start
with one line instead, so that 37 golden tests cannot turn into 37 skips and a green run.
"""

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("SEQNET_SHARED", Path(__file__).resolve().parents[2] / "shared"))
# What the tests read there: the parity case, the evaluation golden sets and the SPEC.
NEEDED = (
    "SPEC.md",
    "parity/golden_inference.pt",
    "parity/fill_weights.py",
    "parity/reference_state_dict_keys.json",
    "evalgold/expected.json",
    "evalgold/loader_expected.json",
    "evalgold/CUHK-SYSU",
    "evalgold/PRW",
)


def in_ci():
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing_golden_cases():
    """None when the golden cases are all there, else the reason (one line)."""
    missing = [name for name in NEEDED if not (SHARED / name).exists()]
    if not missing:
        return None
    return f"golden cases not found at {SHARED} (missing {', '.join(missing)}; set SEQNET_SHARED)"


def pytest_sessionstart(session):
    reason = missing_golden_cases()
    if reason and in_ci():
        pytest.exit(f"CI: {reason}", returncode=1)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` skip, with the reason, where PyTorch sees no GPU."""
    marked = [item for item in items if item.get_closest_marker("cuda")]
    if not marked:
        return
    import torch

    if not torch.cuda.is_available():
        for item in marked:
            item.add_marker(pytest.mark.skip(reason="no CUDA device here"))


@pytest.fixture(scope="session")
def shared():
    """Path of ../shared; the test skips (with the reason) when it is absent."""
    reason = missing_golden_cases()
    if reason:
        pytest.skip(reason)
    return SHARED


@pytest.fixture(autouse=True)
def _two_threads():
    import torch  # here, not at the top: a run stopped at the start never imports it

    torch.set_num_threads(2)
