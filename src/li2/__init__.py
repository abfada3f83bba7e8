"""li2: the Li2 theory of grokking, runnable and measurable."""
__version__ = "0.1.0"

from .config import TrainConfig  # noqa: E402
from .run import RunResult, open_run, train  # noqa: E402

__all__ = ["TrainConfig", "RunResult", "train", "open_run", "__version__"]
