"""ddoq: Dataset Distillation by Optimal Quantization.

The pipeline flows one way, one module per stage:
data -> encode (priors) -> quantize -> decode (priors) -> label -> train -> export.
"""

__version__ = "0.1.0"
