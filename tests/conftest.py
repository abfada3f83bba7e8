import os

# Multithreaded OpenBLAS stalls badly when test processes compete for the 2 cores.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pytest
import torch

# Tests must not fight over the 2 cores with each other's thread pools.
torch.set_num_threads(int(os.environ.get("LI2_TEST_THREADS", "1")))


@pytest.fixture
def run_cli(tmp_path):
    """Run the li2 CLI in-process; returns (exit_code, stdout, stderr)."""
    from li2_cli import cli_in_process
    return cli_in_process
