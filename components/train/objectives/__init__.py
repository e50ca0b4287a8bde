"""Training objectives of a stage: how the per-task losses become the loss that is minimised.
One small file per method (LibMTL's weighting/ layout); registry.py maps method names to them."""
from nmtrec.components.train.objectives.base import Objective
from nmtrec.components.train.objectives.famo import FAMO
from nmtrec.components.train.objectives.famo_nmt import FAMONMTStage
from nmtrec.components.train.objectives.nmt import NMTStage, SingleTask
from nmtrec.components.train.objectives.static import StaticWeights

__all__ = ["Objective", "NMTStage", "SingleTask", "StaticWeights", "FAMO", "FAMONMTStage"]
