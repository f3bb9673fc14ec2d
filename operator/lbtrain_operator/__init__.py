"""lbtrain's operator: each ModelRun becomes one GPU Job whose lifecycle Labelbox sees.

Layers, imported one way only (`tests/test_layering.py` holds the decisions to it):
  reasons, settings                                constants and configuration
  admission, jobspec, cancellation, listing,       pure decisions, unit-tested on plain values;
  podstate, progress, runstatus, outbox, delivery  they import no I/O module
  burst, heap, diffbase                            small helpers of the passes
  informer, labelbox, events, heartbeat, metrics   I/O edges (the API server, Labelbox)
  reconcile                                        one pass over one ModelRun, wiring the above
  handlers, cli                                    kopf registration and the command line
"""
