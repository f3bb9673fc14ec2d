"""Development and test tooling: never imported by the webhook, the operator or the trainer.

Everything under ``lbtrain_dev`` exists so that lbtrain can be developed and tested without a
Labelbox account or a GPU cluster (for example a fake Labelbox server that the real SDK talks to).
Product code must not depend on it.
"""
