"""Engine implementations that ship with the core (transformers/torch)."""
