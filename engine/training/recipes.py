"""Name -> training recipe. Imports torch: only the training and export commands use it."""
from __future__ import annotations

import dataclasses
import importlib

from engine.training.harness import Recipe

RECIPES = {"baseline": "engine.methods.baseline.train", "prnet": "engine.methods.prnet.train",
           "3dstn": "engine.methods.stn3d.train"}


def get_recipe(name: str, ablation: str | None = None) -> Recipe:
    if name not in RECIPES:
        raise KeyError(f"no training recipe for {name!r}; trainable: {', '.join(sorted(RECIPES))}")
    recipe = importlib.import_module(RECIPES[name]).RECIPE()
    if ablation is None:
        return recipe
    if ablation not in recipe.ablations:
        known = ", ".join(sorted(recipe.ablations)) or "none"
        raise KeyError(f"{name} has no ablation {ablation!r}; known: {known}")
    return dataclasses.replace(recipe, **recipe.ablations[ablation])
