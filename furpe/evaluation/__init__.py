"""Evaluation: metrics (:mod:`furpe.metrics`, metres in, millimetres out) and the
``furpe evaluate`` harness that runs a method on a dataset (:mod:`furpe.datasets`)."""
