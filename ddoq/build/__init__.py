"""Rebuild the shipped embedded prior (`ddoq.build.prior`, moving to `ddoq.priors.training`);
only the command line imports this folder."""
