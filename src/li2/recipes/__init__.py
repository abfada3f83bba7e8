"""The paper's experiments, one module each (CLAIM, RULE, verdict, run), run and judged by the registry."""
from .common import (
    FINDINGS_KEYS,
    VERDICTS,
    Findings,
    Plan,
    RecipeContext,
    combine,
    deviation,
    mean_ci,
    spearman,
    train_grid,
    welch_diff,
)
from .registry import FULL_MINUTES, MODULES, RECIPES, SIZES, claim_folder, reproduce, run_recipe

__all__ = ["FINDINGS_KEYS", "VERDICTS", "Findings", "Plan", "RecipeContext", "deviation", "combine", "mean_ci", "spearman", "train_grid", "welch_diff",
           "FULL_MINUTES", "MODULES", "RECIPES", "SIZES", "claim_folder", "reproduce", "run_recipe"]
