"""Quantization layer (not built yet): INT8, INT4, GPTQ, FP8, ONNX and GGUF artifacts.

Planned shape: one module per format (`quantize/<format>.py`) with two entry points, produce an artifact
from a parent `hf` artifact and load it as a `lifecycle.engine.Engine`, each registered by format name
with `lifecycle.engine.register_engine`. Nothing here is implemented yet.
"""
