"""Data: synthetic builders for the built-in task, dataset loading."""
