"""Locust load tests with SLO thresholds against the OpenAI-compatible endpoint (not built yet)."""
