"""Alignment stages (DPO; more methods later)."""
