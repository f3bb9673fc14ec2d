"""The parts of `bench/trainer_bench.py`: its cases, random production weights, synthetic data
and environment (:mod:`.setup`), and its `--host-overhead` mode (:mod:`.host_overhead`).

They import only the standard library, the ML stack and the trainer's modules that need no
Labelbox SDK, as the script does, so they run on a GPU machine with just those installed.
"""
