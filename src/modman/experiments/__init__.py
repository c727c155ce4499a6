"""Experiments: data, models and training runs built on modman's optimizers."""
