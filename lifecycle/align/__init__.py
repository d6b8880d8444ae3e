"""Alignment stages: DPO family, ORPO, CPO, SimPO, KTO, GRPO, RLOO and reward models."""
