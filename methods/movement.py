"""Movement pruning (Sanh et al. 2020), at the granularity of FFN neurons."""

from __future__ import annotations

from harness.registry import METHODS
from methods._movement import MovementScores


@METHODS.register("movement")
class Movement(MovementScores):
    """Learned scores (init 0, own lr `score_lr`) trained through a straight-through top-v mask on the neurons' weights; local top-v."""

    selection = "local"
