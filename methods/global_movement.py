"""Ablation: GUM's global selection without its uniqueness regularizer."""

from __future__ import annotations

from harness.registry import METHODS
from methods._movement import MovementScores


@METHODS.register("global_movement")
class GlobalMovement(MovementScores):
    """Movement scores with one global top-v cut over all FFN layers; no regularizer (GUM ablation)."""

    selection = "global"
