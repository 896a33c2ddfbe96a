"""The VAE gRPC service. A request's path through the modules:

server (wiring, signals, drain) -> instrumentation (metrics, status codes, admission) ->
servicer (request fields checked by validation, responses serialized by wire) -> pipeline
(noise, the VAE's operations) -> batching (rows stacked into one onnxruntime run on a worker
thread) -> model (the sessions).

config holds every setting, errors the exceptions and their status codes, metrics every
Prometheus metric, reload the model roll-out, client a Python client and CLI.
"""
