"""Drawing and rendering: run figures, study figures, the HTML report. Never trains."""
from .figures import curves_figure, dynamics_figure, pyplot, run_figures, save_both, spectra_figure
from .report import ReportError, render, write_report
from .study_figures import energy_figure, phase_figure

__all__ = ["curves_figure", "dynamics_figure", "pyplot", "run_figures", "save_both", "spectra_figure",
           "ReportError", "render", "write_report", "energy_figure", "phase_figure"]
