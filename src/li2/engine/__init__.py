"""A stack of models in memory: the two-layer network with hand-written gradients, optimisers with
per-model hyperparameters, the trainer and its diagnostics hooks. No files, no terminal."""
from .diagnostics import Diagnostics, hooks_for
from .model import TwoLayerNet, chunk_size, hidden_preactivation, init_params, make_batch
from .optim import NS_COEFFS, Optimizer, newton_schulz5
from .trainer import BASE_COLUMNS, EvalContext, Trainer, UnitResult, resolve_device

__all__ = ["Diagnostics", "hooks_for", "TwoLayerNet", "chunk_size", "hidden_preactivation", "init_params",
           "make_batch", "NS_COEFFS", "Optimizer", "newton_schulz5", "BASE_COLUMNS", "EvalContext", "Trainer",
           "UnitResult", "resolve_device"]
