"""One-off measurements behind the numbers in docs/ (not part of the app or the engine): each module runs from the
repository root as ``python -m research.NAME`` and says in its docstring what it measures and how it was run."""
