"""Well-formed traffic checked against reference answers, for tests in which something goes
wrong on the server while callers keep calling (a roll-out, a drain, bad input beside them).

    with Traffic(server.target, seeded_requests(heldout)) as traffic:
        ...  # the failure under test happens here
    traffic.assert_clean()  # every call answered, every answer equal to the reference
"""

import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np
from vae.v1 import vae_pb2, vae_pb2_grpc

from service.tensors import to_proto

# Large enough for any response the tests ask for.
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
CALL_TIMEOUT_SECONDS = 30.0

Call = tuple[str, object]  # (method name, request message)


def seeded_requests(heldout: np.ndarray, rows: Sequence[int] = (1, 5, 16)) -> list[Call]:
    """Requests to every RPC whose answers are fixed (seeded or deterministic)."""
    calls: list[Call] = [("GetModelInfo", vae_pb2.GetModelInfoRequest())]
    for i, n in enumerate(rows):
        images = to_proto(heldout[i:i + n])
        latents = np.linspace(-2, 2, 2 * n, dtype=np.float32).reshape(n, 2)
        calls += [
            ("Sample", vae_pb2.SampleRequest(count=n, seed=i, return_latents=True)),
            ("Encode", vae_pb2.EncodeRequest(images=images, seed=100 + i)),
            ("Reconstruct", vae_pb2.ReconstructRequest(images=images, seed=200 + i)),
            ("Reconstruct", vae_pb2.ReconstructRequest(images=images)),
            ("Decode", vae_pb2.DecodeRequest(latents=to_proto(latents))),
        ]
    return calls


def answer_bytes(response) -> bytes:
    """A response without its model_version, serialized: equal across model copies."""
    copy = type(response)()
    copy.CopyFrom(response)
    copy.ClearField("model_version" if hasattr(copy, "model_version") else "version")
    return copy.SerializeToString(deterministic=True)


def version_of(response) -> str:
    """The model version a response carries."""
    return getattr(response, "model_version", None) or response.version


@dataclass
class CallerLog:
    """What one caller saw, in order."""

    outcomes: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Traffic:
    """Callers that send `calls` round after round until stopped, each on its own channel,
    checking every answer against the reference taken before they start.

    `stop_on` ends a caller at the first failure it matches (e.g. UNAVAILABLE during a
    shutdown); any other failure is recorded and the caller goes on.
    """

    def __init__(
        self,
        target: str,
        calls: Sequence[Call],
        callers: int = 3,
        channel_factory: Callable[[], grpc.Channel] | None = None,
        stop_on: Callable[[grpc.RpcError], bool] = lambda error: False,
    ) -> None:
        self.calls = list(calls)
        self._open = channel_factory or (
            lambda: grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        )
        self._expected = references_on(self._open, self.calls)
        self._stop_on = stop_on
        self._stop = threading.Event()
        self._answered = threading.Condition()
        self.logs = [CallerLog() for _ in range(callers)]
        self._threads = [
            threading.Thread(target=self._run, args=(log,), daemon=True) for log in self.logs
        ]

    def __enter__(self) -> "Traffic":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self, timeout: float = 60.0) -> None:
        """Ask the callers to finish the call they are in, and wait for them."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
            assert not thread.is_alive(), "a caller hung"

    def wait_answered(self, calls_per_caller: int, timeout: float = 60.0) -> None:
        """Wait until every caller has had `calls_per_caller` more answers than now."""
        goal = [len(log.outcomes) + calls_per_caller for log in self.logs]
        deadline = time.monotonic() + timeout
        with self._answered:
            while any(len(log.outcomes) < n for log, n in zip(self.logs, goal, strict=True)):
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"callers answered {[len(x.outcomes) for x in self.logs]}"
                self._answered.wait(remaining)

    def counts(self) -> Counter:
        """Outcomes of all calls so far: "OK" or a status code name."""
        return Counter(o for log in self.logs for o in log.outcomes)

    def assert_clean(self, minimum_calls: int = 1) -> None:
        """Every call was answered OK with the reference answer, and there were enough."""
        wrong = [w for log in self.logs for w in log.wrong]
        errors = [e for log in self.logs for e in log.errors]
        assert wrong == [] and errors == [], (wrong[:5], errors[:5])
        assert min(len(log.outcomes) for log in self.logs) >= minimum_calls, self.counts()

    def _run(self, log: CallerLog) -> None:
        with self._open() as channel:
            stub = vae_pb2_grpc.VAEServiceStub(channel)
            while not self._stop.is_set():
                for (method, request), expected in zip(self.calls, self._expected, strict=True):
                    try:
                        response = getattr(stub, method)(request, timeout=CALL_TIMEOUT_SECONDS)
                    except grpc.RpcError as error:
                        code = error.code().name
                        self._record(log, code)
                        log.errors.append(f"{method}: {code}: {error.details()}")
                        if self._stop_on(error):
                            return
                        continue
                    if answer_bytes(response) != expected:
                        log.wrong.append(f"{method} answered differently from its reference")
                    log.versions.append(version_of(response))
                    self._record(log, "OK")
                    if self._stop.is_set():
                        return

    def _record(self, log: CallerLog, result: str) -> None:
        with self._answered:
            log.outcomes.append(result)
            self._answered.notify_all()


def references_on(open_channel: Callable[[], grpc.Channel], calls: Sequence[Call]) -> list[bytes]:
    """The answer to each call over a channel from `open_channel`, asked one at a time."""
    with open_channel() as channel:
        stub = vae_pb2_grpc.VAEServiceStub(channel)
        return [
            answer_bytes(getattr(stub, method)(request, timeout=CALL_TIMEOUT_SECONDS))
            for method, request in calls
        ]
