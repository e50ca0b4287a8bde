"""Training objectives of a stage: how the per-task losses become the loss that is minimised."""
from components.train.objectives.base import Objective
from components.train.objectives.nmt import NMTStage, SingleTask

__all__ = ["Objective", "NMTStage", "SingleTask"]
