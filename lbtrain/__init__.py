"""lbtrain: train Labelbox model runs on your own GPU Kubernetes cluster.

The distribution holds five import packages with one-way dependencies:
``lbtrain`` (the foundation: the operator-trainer contract, the resource models and the model
catalogue, the Kubernetes client and its list + watch loop, timestamps, the CLI) is imported by
``lbtrain_webhook``, ``lbtrain_operator`` and ``lbtrain_trainer``, which never import one
another; ``lbtrain_dev`` (the testbed, the fake Labelbox, the demo) may import them all, and
nothing that ships imports it.
"""

__version__ = "0.2.0"
