"""Training stages: pretrain, SFT, shared helpers."""
