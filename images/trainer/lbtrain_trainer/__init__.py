"""The lbtrain trainer: the program that runs inside the trainer image's pod.

The operator runs it as three containers of one pod (``export`` and ``prepare`` as init
containers, ``train`` as the main container) sharing a workspace volume, so that the pod's own
lifecycle tells the operator which stage runs. ``run`` chains the three in one process for a
laptop or a debugger. Inputs come from the environment contract in :mod:`lbtrain.contract`;
outputs are the exit code, a JSON termination message, predictions and metrics in the Labelbox
model run, and weights at the artifact destination.

Torch is imported lazily: the pure parts (row parsing, splits, metrics, prediction rows,
synthetic data) work without it, so the operator's tests can reuse them.
"""

__all__ = ["__version__"]

__version__ = "0.2.0"
