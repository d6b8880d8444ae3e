"""Locust load tests against the OpenAI-compatible endpoint, with SLO checks (`lifecycle loadtest`).

`locustfile.py` runs with the stock `locust -f`; `run.py` drives it headless in a subprocess.
"""
