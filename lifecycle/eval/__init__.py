"""Evaluation: the built-in arithmetic checks used by every training stage and by `lifecycle ship`."""
