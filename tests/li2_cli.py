"""Run the li2 CLI inside the test process (fast), restoring the process-wide torch state after."""
import contextlib
import io
import sys

import torch

TORCH_THREADS = torch.get_num_threads()


def restore_torch() -> None:
    """Training sets process-wide torch state (threads, flush-denormal); give it back to the other tests."""
    torch.set_num_threads(TORCH_THREADS)
    torch.set_flush_denormal(False)


def cli_in_process(*args) -> tuple[int, str, str]:
    """`li2 ARGS` in this process: (exit code, stdout, stderr)."""
    from li2 import cli
    out, err = io.StringIO(), io.StringIO()
    old = sys.argv
    sys.argv = ["li2", *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            cli.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = old
        restore_torch()
    return code, out.getvalue(), err.getvalue()
