"""Name -> training recipe. Imports torch: only the training and export commands use it."""
from __future__ import annotations

import importlib

from engine.training.harness import Recipe

RECIPES = {"baseline": "engine.methods.baseline.train", "prnet": "engine.methods.prnet.train",
           "3dstn": "engine.methods.stn3d.train"}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise KeyError(f"no training recipe for {name!r}; trainable: {', '.join(sorted(RECIPES))}")
    return importlib.import_module(RECIPES[name]).RECIPE()
