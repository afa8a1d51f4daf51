"""Benchmarks: latency, accuracy, memory, the compute floor, and the reports built from them.

Nothing is imported here on purpose: the cold-start child process imports edgepack.bench.coldstart only, and
the lean install must be able to run `edgepack bench` without TensorFlow or matplotlib.
"""
