"""onnxprune: structured channel pruning of ONNX models, directly on the graph."""

from .api import PruneResult, analyze, apply_plan, prune, pruning_plan
from .calib import ImageFolder, ImageOptions, SampleSet
from .card import ModelCard, model_card
from .errors import OnnxPruneError, OnnxPruneWarning
from .gate import CheckPolicy, CheckReport, check, load_policy
from .planfile import PlanFile
from .policy_search import prune_within
from .recovery import RecoveryReport
from .report import AnalysisReport, GroupReport, PruneReport

__all__ = [
    "analyze", "prune", "PruneResult", "AnalysisReport", "PruneReport", "GroupReport", "RecoveryReport",
    "SampleSet", "ImageFolder", "ImageOptions", "OnnxPruneError", "OnnxPruneWarning",
    "pruning_plan", "apply_plan", "PlanFile", "model_card", "ModelCard", "check", "CheckPolicy", "CheckReport",
    "load_policy", "prune_within",
]
__version__ = "0.1.0"
