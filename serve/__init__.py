"""Serving layer: an OpenAI-compatible API over any artifact's Engine, on Ray Serve or one local process."""
