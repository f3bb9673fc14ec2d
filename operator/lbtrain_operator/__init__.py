"""lbtrain's operator: each ModelRun becomes one GPU Job whose lifecycle Labelbox sees.

Layers, imported one way only:
  reasons, settings                      constants and configuration
  jobspec, podstate, progress, outbox    pure decisions, unit-tested without a cluster
  labelbox, kubeio, events, metrics      I/O edges
  reconcile                              one pass over one ModelRun, wiring the above
  handlers, cli                          kopf registration and the command line
"""
