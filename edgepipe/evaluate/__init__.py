"""Scoring a pipeline against ground truth: tracking metrics (tracking.py), counting truth and event
matching (counting.py); `edgepipe eval` (commands/eval.py) reports both."""
