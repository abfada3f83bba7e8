"""Many runs: YAML sweep specs, their executors (local process pool, Ray), the results table, and the
phase analysis of the sample-size threshold p_c(M)."""
from .phase import analyse_phase, analyse_sweep_dir
from .spec import GENERATORS, Run, SweepError, SweepSpec, expand, run_id
from .sweep import WALL_COLUMNS, load_results, results_table, run_sweep, sweep_progress

__all__ = ["analyse_phase", "analyse_sweep_dir", "GENERATORS", "Run", "SweepError", "SweepSpec", "expand", "run_id", "WALL_COLUMNS",
           "load_results", "results_table", "run_sweep", "sweep_progress"]
