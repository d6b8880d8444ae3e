"""Evaluation: tasks run through any Engine (artifact or endpoint), metrics, gates; see README.md here.

    lifecycle eval --model tiny-arith --gates configs/gates-base.yaml -o eval.json

`arith.py` keeps the arithmetic checks every training stage and `lifecycle ship` call directly.
"""
