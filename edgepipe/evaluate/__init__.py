"""How well a pipeline does against ground truth: counting truth and matching (counting.py), `edgepipe eval`."""
