"""Bad requests get INVALID_ARGUMENT with a message naming the field, and harm nobody else."""

import threading

import grpc
import numpy as np
import pytest
from vae.v1 import vae_pb2, vae_pb2_grpc

pytestmark = pytest.mark.timeout(120)

FLOAT32, UINT8 = vae_pb2.FLOAT32, vae_pb2.UINT8


def tensor(shape, dtype=FLOAT32, data=None, fill=0.5) -> vae_pb2.Tensor:
    """A Tensor whose data matches its shape unless `data` is given."""
    if data is None:
        numpy_dtype = np.float32 if dtype == FLOAT32 else np.uint8
        data = np.full(int(np.prod(shape)), fill, dtype=numpy_dtype).tobytes()
    return vae_pb2.Tensor(shape=shape, dtype=dtype, data=data)


def image_tensor_cases():
    """(id, images Tensor, field the message must start with)."""
    return [
        ("images missing", vae_pb2.Tensor(), "images.shape"),
        ("one dimension", tensor([784]), "images.shape"),
        ("wrong width", tensor([3, 5]), "images.shape"),
        ("wrong square", tensor([2, 28, 27]), "images.shape"),
        ("four dimensions", tensor([1, 1, 28, 28]), "images.shape"),
        ("no rows", tensor([0, 784]), "images.shape[0]"),
        ("negative rows", tensor([-1, 784], data=b""), "images.shape[0]"),
        ("too many rows", tensor([4097, 784], data=b""), "images.shape[0]"),
        ("dtype unspecified", tensor([1, 784], dtype=0, data=bytes(784 * 4)), "images.dtype"),
        ("unknown dtype", tensor([1, 784], dtype=7, data=bytes(784 * 4)), "images.dtype"),
        ("data too short", tensor([2, 784], data=bytes(784 * 4)), "images.data"),
        ("data too long", tensor([1, 784], UINT8, data=bytes(785)), "images.data"),
        ("uint8 sized as float", tensor([1, 784], UINT8, data=bytes(784 * 4)), "images.data"),
        ("NaN", tensor([1, 784], fill=np.nan), "images.data"),
        ("infinity", tensor([2, 28, 28], fill=np.inf), "images.data"),
        ("above one", tensor([1, 784], fill=1.5), "images.data"),
        ("below zero", tensor([1, 784], fill=-0.01), "images.data"),
    ]


def bad_requests():
    """(id, method, request, field) for every RPC that takes input."""
    cases = [
        ("Sample count 0", "Sample", vae_pb2.SampleRequest(count=0), "count"),
        ("Sample count above max", "Sample", vae_pb2.SampleRequest(count=4097), "count"),
        ("Sample temperature 0", "Sample",
         vae_pb2.SampleRequest(count=1, temperature=0), "temperature"),
        ("Sample temperature negative", "Sample",
         vae_pb2.SampleRequest(count=1, temperature=-1), "temperature"),
        ("Sample temperature NaN", "Sample",
         vae_pb2.SampleRequest(count=1, temperature=float("nan")), "temperature"),
        ("Sample temperature infinite", "Sample",
         vae_pb2.SampleRequest(count=1, temperature=float("inf")), "temperature"),
        ("Sample temperature above 100", "Sample",
         vae_pb2.SampleRequest(count=1, temperature=101), "temperature"),
        ("Decode latents missing", "Decode", vae_pb2.DecodeRequest(), "latents.shape"),
        ("Decode wrong latent dim", "Decode",
         vae_pb2.DecodeRequest(latents=tensor([2, 3])), "latents.shape"),
        ("Decode three dimensions", "Decode",
         vae_pb2.DecodeRequest(latents=tensor([1, 2, 1])), "latents.shape"),
        ("Decode no rows", "Decode", vae_pb2.DecodeRequest(latents=tensor([0, 2])),
         "latents.shape[0]"),
        ("Decode uint8", "Decode",
         vae_pb2.DecodeRequest(latents=tensor([1, 2], UINT8)), "latents.dtype"),
        ("Decode data mismatch", "Decode",
         vae_pb2.DecodeRequest(latents=tensor([1, 2], data=bytes(4))), "latents.data"),
        ("Decode NaN", "Decode",
         vae_pb2.DecodeRequest(latents=tensor([3, 2], fill=np.nan)), "latents.data"),
        ("Decode infinity", "Decode",
         vae_pb2.DecodeRequest(latents=tensor([1, 2], fill=-np.inf)), "latents.data"),
        ("Decode latents beyond 1e4", "Decode",
         vae_pb2.DecodeRequest(latents=tensor([1, 2], fill=-2e4)), "latents.data"),
    ]
    for name, images, field in image_tensor_cases():
        cases.append((f"Encode {name}", "Encode", vae_pb2.EncodeRequest(images=images), field))
        cases.append((f"Reconstruct {name}", "Reconstruct",
                      vae_pb2.ReconstructRequest(images=images, seed=1), field))
    return cases


@pytest.fixture(scope="module")
def stub(vae_server):
    with grpc.insecure_channel(vae_server.target) as channel:
        yield vae_pb2_grpc.VAEServiceStub(channel)


@pytest.mark.parametrize(
    ("method", "request_message", "field"),
    [pytest.param(m, r, f, id=i) for i, m, r, f in bad_requests()],
)
def test_bad_input_is_invalid_argument_naming_the_field(
    stub, method, request_message, field
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        getattr(stub, method)(request_message, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith(f"{field}: "), raised.value.details()


def test_the_messages_say_what_was_expected_and_what_came(stub) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.Encode(vae_pb2.EncodeRequest(images=tensor([3, 5])), timeout=10)
    assert raised.value.details() == (
        "images.shape: must be (N, 784) or (N, 28, 28), got (3, 5)"
    )
    with pytest.raises(grpc.RpcError) as raised:
        stub.Sample(vae_pb2.SampleRequest(count=0), timeout=10)
    assert raised.value.details() == "count: must be between 1 and 4096, got 0"
    with pytest.raises(grpc.RpcError) as raised:
        stub.Decode(vae_pb2.DecodeRequest(latents=tensor([1, 2], data=bytes(4))), timeout=10)
    assert raised.value.details() == (
        "latents.data: has 4 bytes, but shape (1, 2) of FLOAT32 needs 8"
    )


def test_a_message_above_the_size_limit_is_resource_exhausted(stub) -> None:
    too_big = tensor([4096 * 3, 784], UINT8, data=bytes(33 * 1024 * 1024))
    with pytest.raises(grpc.RpcError) as raised:
        stub.Encode(vae_pb2.EncodeRequest(images=too_big), timeout=30)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_good_requests_are_served_correctly_while_bad_ones_arrive(vae_server, stub) -> None:
    expected = stub.Sample(vae_pb2.SampleRequest(count=3, seed=42), timeout=10).images.data
    bad = [request for _, _, request, _ in bad_requests()]
    methods = [method for _, method, _, _ in bad_requests()]
    failures: list[str] = []
    stop = threading.Event()

    def send_bad() -> None:
        while not stop.is_set():
            for method, request in zip(methods, bad, strict=True):
                try:
                    getattr(stub, method)(request, timeout=10)
                    failures.append(f"{method} accepted a bad request")
                except grpc.RpcError as error:
                    if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
                        failures.append(f"{method}: {error.code()}")

    senders = [threading.Thread(target=send_bad) for _ in range(4)]
    for sender in senders:
        sender.start()
    try:
        for _ in range(100):
            response = stub.Sample(vae_pb2.SampleRequest(count=3, seed=42), timeout=10)
            assert response.images.data == expected
    finally:
        stop.set()
        for sender in senders:
            sender.join()
    assert failures == []
    assert vae_server.health() == "SERVING"
    assert vae_server.process.poll() is None
