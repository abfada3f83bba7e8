"""The Li2 theory in closed form and its read-outs: ridge limit and G_F (Stage I), the energy E and
its maxima (Stage II), node spectra, scaling forms, stage boundaries and run outcomes.
No files, no training."""
from .landscape import AscentResult, ascend_energy, energy, energy_and_grad, energy_grad, tangent
from .maxima import (
    IRREP,
    MEMORIZATION,
    OTHER,
    activation_spread,
    classify_maxima,
    energy_landscape,
    participation_ratio,
    predicted_max_energy,
)
from .outcomes import OUTCOMES, annotate_outcomes, classify_model, first_step, grok_step
from .ridge import (
    backprop_gradient,
    backprop_gradient_at_ridge,
    center_rows,
    cosine,
    gram_statistics,
    ridge_residual,
    ridge_top_layer,
    spd_solve,
    stage2_gradient,
)
from .scaling import FORMS, form_values
from .spectra import SpectrumSummary, components_for, node_spectrum, spectrum_summary
from .stages import annotate_summary, detect_stages

__all__ = ["AscentResult", "ascend_energy", "energy", "energy_and_grad", "energy_grad", "tangent", "IRREP",
           "MEMORIZATION", "OTHER", "activation_spread", "classify_maxima", "energy_landscape",
           "participation_ratio", "predicted_max_energy", "OUTCOMES", "annotate_outcomes", "classify_model",
           "first_step", "grok_step", "backprop_gradient", "backprop_gradient_at_ridge", "center_rows", "cosine",
           "gram_statistics", "ridge_residual", "ridge_top_layer", "spd_solve", "stage2_gradient", "FORMS", "form_values",
           "SpectrumSummary", "components_for", "node_spectrum", "spectrum_summary", "annotate_summary",
           "detect_stages"]
