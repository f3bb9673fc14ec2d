"""The parts of `bench/realnode_bench.py`: one run of each kind and its cleanup (:mod:`.runs`),
what its watches record (:mod:`.watch`), how it is summed up (:mod:`.figures`), and the
node-less stand-ins of its `--smoke` mode (:mod:`.smoke`)."""
