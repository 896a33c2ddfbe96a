"""The called method's descriptor, from a .proto file or from the server's reflection service.

By reflection it asks exactly what ghz asks (through jhump/protoreflect's grpcreflect client):
one `ServerReflectionInfo` stream on `grpc.reflection.v1`, falling back to `v1alpha` when the
server answers UNIMPLEMENTED; `FileContainingSymbol` with the method's full name
(`vae.v1.VAEService.Sample`), whose first file is the answer; then `FileByFilename` for every
dependency that the answers have not carried yet. The files go into a fresh descriptor pool, so
nothing is mixed with the generated code of this process.
"""

import importlib.resources
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2

REFLECTION_METHODS = (
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
)


class DescriptorError(Exception):
    """The method could not be described: unknown symbol, bad .proto, no reflection."""


@dataclass(frozen=True)
class ResolvedMethod:
    """A method's descriptor and where it came from."""

    descriptor: descriptor.MethodDescriptor
    source: str  # the reflection method path that answered, or the .proto file

    @property
    def path(self) -> str:
        """The method's HTTP/2 path, `/package.Service/Method`."""
        return f"/{self.descriptor.containing_service.full_name}/{self.descriptor.name}"


def parse_call(call: str) -> tuple[str, str]:
    """Split `package.Service.Method` or `package.Service/Method` (ghz's forms) in two."""
    name = call.removeprefix(".")
    if name.count("/") == 1:
        service, _, method = name.partition("/")
    elif "/" not in name and "." in name:
        service, _, method = name.rpartition(".")
    else:
        service = method = ""
    if not service or not method:
        raise DescriptorError(
            f"method name must be package.Service.Method or package.Service/Method: {call!r}"
        )
    return service, method


def method_from_files(
    files: Iterable[descriptor_pb2.FileDescriptorProto], call: str, source: str
) -> ResolvedMethod:
    """Build `call`'s descriptor from a set of files that holds its service and every import."""
    by_name = {file.name: file for file in files}
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(name: str) -> None:
        if name in added:
            return
        if name not in by_name:
            raise DescriptorError(f"{source}: no descriptor for imported file {name!r}")
        for dependency in by_name[name].dependency:
            add(dependency)
        pool.Add(by_name[name])
        added.add(name)

    for name in by_name:
        add(name)
    service_name, method_name = parse_call(call)
    try:
        service = pool.FindServiceByName(service_name)
    except KeyError:
        raise DescriptorError(f"{source}: cannot find service {service_name!r}") from None
    if method_name not in service.methods_by_name:
        raise DescriptorError(
            f"{source}: service {service_name!r} does not include a method named {method_name!r}"
        )
    return ResolvedMethod(service.methods_by_name[method_name], source)


async def _ask(
    stream: grpc.aio.StreamStreamCall, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    await stream.write(request)
    response = await stream.read()
    if response is grpc.aio.EOF:
        raise DescriptorError("the reflection stream ended without an answer")
    if response.HasField("error_response"):
        asked = request.WhichOneof("message_request")
        raise DescriptorError(
            f"reflection: {asked} {getattr(request, str(asked))!r}: "
            f"{response.error_response.error_message} (code {response.error_response.error_code})"
        )
    return response


async def _files_on_stream(
    stream: grpc.aio.StreamStreamCall, symbol: str
) -> list[descriptor_pb2.FileDescriptorProto]:
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}

    def keep(response: reflection_pb2.ServerReflectionResponse) -> None:
        for serialized in response.file_descriptor_response.file_descriptor_proto:
            file = descriptor_pb2.FileDescriptorProto.FromString(serialized)
            files.setdefault(file.name, file)

    keep(await _ask(stream, reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)))
    missing = [dep for file in list(files.values()) for dep in file.dependency if dep not in files]
    while missing:
        name = missing.pop()
        if name in files:
            continue
        keep(await _ask(stream, reflection_pb2.ServerReflectionRequest(file_by_filename=name)))
        if name not in files:
            raise DescriptorError(f"reflection: FileByFilename {name!r} answered another file")
        missing.extend(dep for dep in files[name].dependency if dep not in files)
    return list(files.values())


async def resolve_by_reflection(
    channel: grpc.aio.Channel, call: str, timeout_s: float = 10.0
) -> ResolvedMethod:
    """Describe `call` by asking the server's reflection service, as ghz does."""
    service, method = parse_call(call)
    symbol = f"{service}.{method}"
    failure: grpc.aio.AioRpcError | None = None
    for path in REFLECTION_METHODS:
        stream = channel.stream_stream(
            path,
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )(timeout=timeout_s)
        try:
            files = await _files_on_stream(stream, symbol)
        except grpc.aio.AioRpcError as error:
            # A server without this API answers UNIMPLEMENTED; a Python one can answer so while
            # the request is still being written, and gRPC's client then reports INTERNAL.
            if error.code() not in _NOT_OFFERED:
                raise _failed(error) from error
            if error.code() != grpc.StatusCode.UNIMPLEMENTED and failure is None:
                failure = error
            continue
        finally:
            stream.cancel()
        return method_from_files(files, call, path)
    if failure is not None:
        raise _failed(failure) from failure
    raise DescriptorError("server does not support the reflection API")


# How a call to a reflection API the server does not offer can end (see resolve_by_reflection).
_NOT_OFFERED = (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INTERNAL)


def _failed(error: grpc.aio.AioRpcError) -> DescriptorError:
    return DescriptorError(f"reflection failed: {error.code().name}: {error.details()}")


def resolve_from_proto(proto: str, import_paths: Sequence[str], call: str) -> ResolvedMethod:
    """Describe `call` from a .proto file, compiled in-process by grpcio-tools' protoc.

    Like ghz: paths are relative to the working directory; the file is looked for there and
    under `import_paths`, and imports are looked for under `import_paths`, the working
    directory and the file's own directory.
    """
    try:
        # Optional: reflection needs no compiler, so grpcio-tools is not a runtime dependency.
        from grpc_tools import protoc
    except ImportError:
        raise DescriptorError(
            "--proto needs grpcio-tools (pip install 'vae-serving[codegen]'); "
            "or leave out --proto to use server reflection"
        ) from None
    # protoc matches a file to an import path by exact prefix, so every path is made absolute.
    includes = [Path(include).resolve() for include in (*import_paths, ".")]
    candidates = [Path(proto).resolve(), *(include / proto for include in includes)]
    proto_path = next((path for path in candidates if path.is_file()), None)
    if proto_path is None:
        raise DescriptorError(f"no such .proto file: {proto}")
    if not any(proto_path.is_relative_to(include) for include in includes):
        includes.append(proto_path.parent)
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    with tempfile.TemporaryDirectory() as scratch:
        out = os.path.join(scratch, "set.pb")
        args = ["protoc", *(f"-I{include}" for include in includes), f"-I{well_known}"]
        args += ["--include_imports", f"--descriptor_set_out={out}", str(proto_path)]
        if protoc.main(args) != 0:
            raise DescriptorError(f"protoc could not compile {proto} (its messages are above)")
        file_set = descriptor_pb2.FileDescriptorSet.FromString(Path(out).read_bytes())
    return method_from_files(file_set.file, call, proto)
