"""Algorithm 2, steps 1-3: encode, quantize, decode and label each class, locally or on Ray."""
