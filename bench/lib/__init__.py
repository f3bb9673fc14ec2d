"""What the benchmarks share, one concept per module, so that no bench script carries a copy.

- :mod:`bench.lib.procfs`: CPU seconds and memory of a process, from ``/proc``;
- :mod:`bench.lib.stats`: quantiles and medians;
- :mod:`bench.lib.machine`: the machine, the load and the commit a figure comes from;
- :mod:`bench.lib.testbed`: a testbed control plane with the CRDs installed;
- :mod:`bench.lib.net`: free local ports, and waiting until a server listens;
- :mod:`bench.lib.ids`: valid Labelbox ids (the CRD and the webhook refuse anything else);
- :mod:`bench.lib.signing`: the webhook signature Labelbox sends;
- :mod:`bench.lib.readme`: the generated blocks of ``bench/README.md``;
- :mod:`bench.lib.aio`: bounded concurrency, retries and waits for the load generators;
- :mod:`bench.lib.kube`: namespaces, list+watch followers and the API server's request counts;
- :mod:`bench.lib.operator`: ``lbtrain operator`` as a subprocess, and the ModelRuns it is fed.

The scripts put the checkout on ``sys.path`` and import these as ``bench.lib.*``, which is
also how mypy sees them.
"""
