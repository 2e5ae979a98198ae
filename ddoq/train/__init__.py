"""Algorithm 2, step 4: students, the weighted training loop, and training across processes."""
