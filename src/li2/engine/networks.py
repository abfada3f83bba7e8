"""The network a config names (`--model`), behind one interface, and its initial parameters.

Every network class (engine.model.TwoLayerNet, engine.mlp.DeepMLP, engine.transformer.Transformer) has
    name, bottom, top            its --model name; the parameter names of its lowest and top layers
    evaluate(params, batch)      → Evaluation (loss, accuracy per model)
    loss_and_grads(params, batch, need_F, need_acc, on_block) → (Evaluation, grads, Features or None)
    uses_fused(device)           whether steps run through the fused CPU kernels (mlp2 only)
and the deep ones also layer_weights(params): {name: weight}, bottom up (the layer-wise read-outs).
Parameters are dicts of stacked tensors with the model axis first; `initial_params` gives one model's.
"""
from __future__ import annotations

import torch

from ..config import TrainConfig
from ..task import Task
from .mlp import DeepMLP
from .model import TwoLayerNet, init_params
from .transformer import Transformer, transformer_init

Network = TwoLayerNet | DeepMLP | Transformer


def build_network(config: TrainConfig, task: Task) -> Network:
    """The network of config.model (mlp2 keeps its hand-written fast path)."""
    if config.model == "mlp2":
        return TwoLayerNet(config.activation, config.loss, config.layers, blas=config.blas)
    if config.model == "mlp":
        return DeepMLP(config.activation, config.loss, config.depth, bool(config.residual))
    return Transformer(config.activation, config.loss, task.order)


def embedding(config: TrainConfig, params: dict[str, torch.Tensor], order: int) -> torch.Tensor:
    """The lowest layer read as functions on the group, (B, blocks·M, width) — or without the model axis:
    W (one block per operand) for the MLPs, the token embedding of the M group elements for the transformer
    ("=" left out)."""
    return params["embed"][..., :order, :] if config.model == "transformer" else params["W"]


def embedding_blocks(config: TrainConfig, operands: int) -> int:
    """Blocks of M rows in a network's `embedding`: one per operand (W), one for the transformer's shared
    token embedding."""
    return 1 if config.model == "transformer" else operands


def initial_params(config: TrainConfig, task: Task, seed: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """One model's initial parameters (no model axis), a function of its seed alone."""
    m, k = task.order, task.operands
    if config.model == "transformer":
        return transformer_init(m, k, config.d_model, config.heads, config.d_mlp, seed, config.init_scale,
                                config.top_init_scale, dtype)
    layers = config.layers if config.model == "mlp2" else config.depth - 1
    return init_params(m, k, config.width, layers, seed, config.init_scale, config.top_init_scale, dtype)
