"""Recommenders with the estimator interface of :mod:`ghrs.models.base`."""
