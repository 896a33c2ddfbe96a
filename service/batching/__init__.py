"""Dynamic batching for one ONNX graph: requests' rows stacked into one onnxruntime run.

The policy (policy.py) decides when a request runs at once on its own thread and how long a
partial batch may wait to fill; it is plain state with a clock, so its decisions can be tested
exactly. The mechanism (batcher.py) queues requests, runs batches on a worker thread and
spreads failures to the requests they concern; jobs.py splits requests into rows and
reassembles their outputs.
"""

from service.batching.batcher import Batcher, BatcherStopped, LoadSignal
from service.batching.jobs import IsActive, Runnable
from service.batching.policy import BatchPolicy, BatchPolicySettings

__all__ = [
    "BatchPolicy",
    "BatchPolicySettings",
    "Batcher",
    "BatcherStopped",
    "IsActive",
    "LoadSignal",
    "Runnable",
]
