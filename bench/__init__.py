"""`make bench`: throughput, latency, event lag and cost of the whole mesh, measured against
a bare gRPC echo server in the same run on the same machine (see docs/performance.md)."""
