"""onnxprune: structured channel pruning of ONNX models, directly on the graph."""

from .api import PruneResult, analyze, prune
from .errors import OnnxPruneError
from .report import AnalysisReport, GroupReport, PruneReport

__all__ = ["analyze", "prune", "PruneResult", "AnalysisReport", "PruneReport", "GroupReport", "OnnxPruneError"]
__version__ = "0.1.0"
