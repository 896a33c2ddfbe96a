"""The benchmark: the service against gRPC's floor and onnxruntime's compute limit, in one run."""
