"""onnxprune: structured channel pruning of ONNX models, directly on the graph."""

from .api import PruneResult, analyze, prune
from .calib import ImageFolder, ImageOptions, SampleSet
from .errors import OnnxPruneError, OnnxPruneWarning
from .recovery import RecoveryReport
from .report import AnalysisReport, GroupReport, PruneReport

__all__ = [
    "analyze", "prune", "PruneResult", "AnalysisReport", "PruneReport", "GroupReport", "RecoveryReport",
    "SampleSet", "ImageFolder", "ImageOptions", "OnnxPruneError", "OnnxPruneWarning",
]
__version__ = "0.1.0"
