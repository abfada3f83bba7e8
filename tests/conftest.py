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
    import contextlib
    import io
    import sys

    from li2.cli import main

    def _run(*args):
        out, err = io.StringIO(), io.StringIO()
        old = sys.argv
        sys.argv = ["li2", *map(str, args)]
        code = 0
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            sys.argv = old
        return code, out.getvalue(), err.getvalue()

    return _run
