"""Model builders, one module per family; ``small`` models for CPUs, ``production`` for GPUs.

Production models start from pretrained weights supplied by the deployment (baked into the
image or mounted; see :mod:`lbtrain_trainer.models.pretrained`), never from a hub download
unless ``LBTRAIN_ALLOW_HUB_DOWNLOAD`` says so.
"""
