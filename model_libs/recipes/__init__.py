"""Recipes: the official DSOD jobs as library calls (write nets + solver + job script, train,
resume, score). The scripts under ``examples/`` are thin wrappers around these."""
