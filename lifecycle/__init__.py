"""lifecycle: data -> pretrain/SFT -> align -> merge -> quantize -> eval -> serve, as one toolkit.

Importing this package is cheap: heavy libraries (torch, transformers, trl, ray) are imported inside the
functions that need them, so `lifecycle --help` stays instant.
"""

__version__ = "0.1.0"
