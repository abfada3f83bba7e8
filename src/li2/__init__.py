"""li2: the Li2 theory of grokking, runnable and measurable.

The public face: `TrainConfig`, `train`, `open_run`, `RunResult`. They are imported on first use,
so `import li2` stays fast (torch loads only when a run is trained or opened).
"""
from .version import __version__

__all__ = ["TrainConfig", "RunResult", "train", "open_run", "__version__"]


def __getattr__(name: str):
    if name == "TrainConfig":
        from .config import TrainConfig
        return TrainConfig
    if name in ("train", "open_run", "RunResult"):
        from .runs import RunResult, open_run, train
        return {"train": train, "open_run": open_run, "RunResult": RunResult}[name]
    raise AttributeError(f"module 'li2' has no attribute '{name}'")
