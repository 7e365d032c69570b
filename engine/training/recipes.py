"""Name -> training recipe, from each method package's declaration (``METHOD.recipe``). Imports torch: only the
training and export commands use it."""
from __future__ import annotations

import dataclasses
import importlib

from engine.training.recipe import Recipe


def trainable() -> dict[str, str]:
    """Method name -> its recipe module, for every method package that declares one."""
    from engine.methods.base import registry

    return {n: i.recipe for n, i in sorted(registry().items()) if i.recipe}


def stage_recipes() -> dict[str, str]:
    """Stage name -> recipe module of the earlier training stages a method's recipe module declares in
    ``STAGE_RECIPES`` (e.g. ``cprfa-dafi``, CPRFA's U-Net, trained before ``cprfa``). Not methods: no weights of
    their own are loaded by the app."""
    out: dict[str, str] = {}
    for module in trainable().values():
        out.update(getattr(importlib.import_module(module), "STAGE_RECIPES", {}))
    return out


def get_recipe(name: str, ablation: str | None = None) -> Recipe:
    """The recipe of method ``name``; a dotted recipe module (e.g. ``engine.methods.prnet.train``) also works, for
    benchmarking or training a recipe that is not (or no longer) its method's declared one."""
    if "." in name:
        module = importlib.import_module(name)
        if not hasattr(module, "RECIPE"):
            raise KeyError(f"{name} defines no RECIPE")
        recipe = module.RECIPE()
        return recipe if ablation is None else dataclasses.replace(recipe, **recipe.ablations[ablation])
    recipes = trainable()
    stage = None if name in recipes else stage_recipes().get(name)
    if name not in recipes and stage is None:
        raise KeyError(f"no training recipe for {name!r}; trainable: {', '.join(sorted(recipes))}")
    recipe = importlib.import_module(recipes.get(name, stage)).RECIPE()
    if ablation is None:
        return recipe
    if ablation not in recipe.ablations:
        known = ", ".join(sorted(recipe.ablations)) or "none"
        raise KeyError(f"{name} has no ablation {ablation!r}; known: {known}")
    return dataclasses.replace(recipe, **recipe.ablations[ablation])
