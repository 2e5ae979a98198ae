"""Stage 1, data: datasets, their fixed train/test split and their fingerprints."""
