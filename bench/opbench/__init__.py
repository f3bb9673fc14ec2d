"""The parts of `bench/operator_bench.py`, one per phase of its scenario.

- :mod:`.ceiling`: the API server's own rate of Job creates, and of ModelRun+Job pairs;
- :mod:`.phase`: one operator phase (ModelRuns in, Jobs out, then COMPLETE in Labelbox);
- :mod:`.kubelet`: the fake kubelet that drives the pods, in its own process;
- :mod:`.report`: the tables and goals written into bench/README.md.
"""
