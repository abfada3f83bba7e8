"""One run on disk: train into a run folder (exact resume from checkpoints), open a finished one,
diagnose it."""
from .folder import RunError, RunResult, diagnose_dir, load_config, open_run, read_run_tables
from .training import train, train_unit, units

__all__ = ["RunError", "RunResult", "diagnose_dir", "load_config", "open_run", "read_run_tables", "train",
           "train_unit", "units"]
