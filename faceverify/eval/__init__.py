"""Evaluation: metrics, LFW protocols, calibration, report formatting and the embedding cache they share."""
