"""The paper's experiments, one module each (CLAIM, RULE, verdict, plan, run), run and judged by the registry."""
from .common import (
    DEVIATION_KEYS,
    FINDINGS_KEYS,
    PLAN_KEYS,
    VERDICTS,
    Findings,
    Plan,
    RecipeContext,
    combine,
    deviation,
    estimate_seconds,
    make_plan,
    mean_ci,
    paired_diff,
    spearman,
    train_grid,
    welch_diff,
)
from .registry import (
    CONTRACT_PENDING,
    MODULES,
    RECIPES,
    SIZES,
    ContractError,
    check_findings,
    claim_folder,
    plan,
    plans,
    reproduce,
    run_recipe,
)

__all__ = ["DEVIATION_KEYS", "FINDINGS_KEYS", "PLAN_KEYS", "VERDICTS", "Findings", "Plan", "RecipeContext", "combine", "deviation",
           "estimate_seconds", "make_plan", "mean_ci", "paired_diff", "spearman", "train_grid", "welch_diff", "CONTRACT_PENDING",
           "MODULES", "RECIPES", "SIZES", "ContractError", "check_findings", "claim_folder", "plan", "plans",
           "reproduce", "run_recipe"]
