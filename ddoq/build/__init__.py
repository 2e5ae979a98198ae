"""Rebuild what ships in ``ddoq/assets``: the embedded prior and teacher (no pipeline module
imports this folder; the command line does)."""
