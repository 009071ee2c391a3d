"""``movq-bench``: reconstruction benchmarks of codecs on image folders (see :mod:`movq.bench.cli`)."""
