"""lbtrain: train Labelbox model runs on your own GPU Kubernetes cluster.

The distribution holds four import packages with one-way dependencies:
``lbtrain`` (shared contracts, resource models, the Kubernetes client, the CLI and the local
tooling) is imported by ``lbtrain_webhook``, ``lbtrain_operator`` and ``lbtrain_trainer``, which
never import one another.
"""

__version__ = "0.1.0"
