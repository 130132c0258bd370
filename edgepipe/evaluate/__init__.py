"""Scoring edgepipe against ground truth: tracking metrics (tracking.py) and counts."""
