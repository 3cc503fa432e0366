"""Shared fixtures: the golden cases in ../shared (beside the repository, as CI has them)."""

import os
from pathlib import Path

import pytest
import torch

SHARED = Path(os.environ.get("SEQNET_SHARED", Path(__file__).resolve().parents[2] / "shared"))


@pytest.fixture(scope="session")
def shared():
    """Path of ../shared; the test skips (with the reason) when it is absent."""
    if not (SHARED / "parity").is_dir():
        pytest.skip(f"golden cases not found at {SHARED} (set SEQNET_SHARED)")
    return SHARED


@pytest.fixture(autouse=True)
def _two_threads():
    torch.set_num_threads(2)
