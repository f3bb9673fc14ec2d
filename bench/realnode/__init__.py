"""The parts of `bench/realnode_bench.py`: what its watches record and how it is summed up
(:mod:`.figures`), and the node-less stand-ins of its `--smoke` mode (:mod:`.smoke`)."""
