"""ghz by server reflection: the requests ghz sends get answers it can build every method from."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection as stock_reflection
from grpc_reflection.v1alpha import reflection_pb2
from vae.v1 import vae_pb2

from loadtest.descriptors import (
    REFLECTION_METHODS,
    DescriptorError,
    resolve_by_reflection,
    resolve_from_proto,
)
from service.reflection import V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME, enable_reflection

SERVICE = vae_pb2.DESCRIPTOR.services_by_name["VAEService"]
METHODS = list(SERVICE.methods)
V1_PATH, V1ALPHA_PATH = REFLECTION_METHODS

Enable = Callable[[grpc.Server], None]


def ours(server: grpc.Server) -> None:
    enable_reflection(server, [SERVICE.full_name])


def stock(server: grpc.Server) -> None:
    stock_reflection.enable_server_reflection(
        [SERVICE.full_name, stock_reflection.SERVICE_NAME], server
    )


@asynccontextmanager
async def reflection_channel(enable: Enable) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to a server like the service's (grpcio's thread-pool server) offering only
    reflection."""
    server = grpc.server(ThreadPoolExecutor(4))
    enable(server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        server.stop(None)


def run(test: Callable[[grpc.aio.Channel], Awaitable[None]], enable: Enable = ours) -> None:
    async def main() -> None:
        async with reflection_channel(enable) as channel:
            await asyncio.wait_for(test(channel), timeout=20)

    asyncio.run(main())


def without_json_names(messages) -> None:
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        without_json_names(message.nested_type)


def compiled_contract(vae_proto: str) -> descriptor_pb2.FileDescriptorProto:
    """protos/vae/v1/vae.proto as protoc compiles it, less the json names clients derive."""
    method = resolve_from_proto(
        vae_proto, [str(Path(vae_proto).parents[2])], "vae.v1.VAEService.Sample"
    )
    proto = descriptor_pb2.FileDescriptorProto()
    method.descriptor.containing_service.file.CopyToProto(proto)
    without_json_names(proto.message_type)
    return proto


def as_proto(message_descriptor) -> descriptor_pb2.DescriptorProto:
    proto = descriptor_pb2.DescriptorProto()
    message_descriptor.CopyToProto(proto)
    return proto


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_ghz_requests_build_every_rpc_over_v1(method) -> None:
    async def test(channel: grpc.aio.Channel) -> None:
        resolved = await resolve_by_reflection(channel, f"{SERVICE.full_name}.{method.name}")
        assert resolved.source == V1_PATH
        assert resolved.path == f"/{SERVICE.full_name}/{method.name}"
        built = resolved.descriptor
        assert built.input_type.full_name == method.input_type.full_name
        assert built.output_type.full_name == method.output_type.full_name
        assert as_proto(built.input_type) == as_proto(method.input_type)
        assert as_proto(built.output_type) == as_proto(method.output_type)

    run(test)


def test_the_slash_form_of_the_call_resolves_too() -> None:
    async def test(channel: grpc.aio.Channel) -> None:
        resolved = await resolve_by_reflection(channel, f"{SERVICE.full_name}/Sample")
        assert resolved.descriptor.full_name == f"{SERVICE.full_name}.Sample"

    run(test)


@pytest.mark.parametrize("path", REFLECTION_METHODS, ids=["v1", "v1alpha"])
def test_method_symbol_answers_the_contract_first_on_both_versions(path: str, vae_proto) -> None:
    contract = compiled_contract(vae_proto)

    async def test(channel: grpc.aio.Channel) -> None:
        stream = channel.stream_stream(
            path,
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )()
        for method in METHODS:
            request = reflection_pb2.ServerReflectionRequest(
                file_containing_symbol=f"{SERVICE.full_name}.{method.name}"
            )
            await stream.write(request)
            response = await stream.read()
            assert response.original_request == request
            files = response.file_descriptor_response.file_descriptor_proto
            first = descriptor_pb2.FileDescriptorProto.FromString(files[0])
            assert first == contract
        await stream.write(reflection_pb2.ServerReflectionRequest(list_services="*"))
        listed = [s.name for s in (await stream.read()).list_services_response.service]
        assert sorted(listed) == sorted([SERVICE.full_name, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME])
        await stream.done_writing()

    run(test)


def test_reflection_describes_itself_as_v1() -> None:
    async def test(channel: grpc.aio.Channel) -> None:
        resolved = await resolve_by_reflection(channel, f"{V1_SERVICE_NAME}.ServerReflectionInfo")
        built = resolved.descriptor
        assert built.input_type.full_name == "grpc.reflection.v1.ServerReflectionRequest"
        assert built.client_streaming and built.server_streaming
        # v1 must stay wire-compatible with the v1alpha messages that answer it.
        alpha = reflection_pb2.ServerReflectionResponse.DESCRIPTOR
        assert [(f.name, f.number, f.type) for f in built.output_type.fields] == [
            (f.name, f.number, f.type) for f in alpha.fields
        ]

    run(test)


@pytest.mark.parametrize("call", [f"{SERVICE.full_name}.Upscale", "vae.v1.NoService.Sample"])
def test_unknown_symbols_are_not_found(call: str) -> None:
    async def test(channel: grpc.aio.Channel) -> None:
        with pytest.raises(DescriptorError, match=r"code 5\)"):
            await resolve_by_reflection(channel, call)

    run(test)


def test_stock_grpcio_reflection_fails_ghz_after_falling_back_to_v1alpha() -> None:
    """Why service/reflection.py exists: grpcio's servicer does not resolve method symbols."""

    async def test(channel: grpc.aio.Channel) -> None:
        with pytest.raises(DescriptorError, match="file_containing_symbol.*code 5"):
            await resolve_by_reflection(channel, f"{SERVICE.full_name}.Sample")

    run(test, enable=stock)
