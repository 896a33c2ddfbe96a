"""Server reflection that answers what grpcurl and ghz ask, so that neither needs the .proto file.

grpcio-reflection's servicer falls short of those clients in two ways, both fixed here:
- it resolves service, message, field and enum names but not method names, while ghz asks
  `FileContainingSymbol("vae.v1.VAEService.Sample")` and stops at `Symbol not found`;
- it offers only `grpc.reflection.v1alpha`, while ghz and grpcurl try `grpc.reflection.v1` first
  (they fall back to v1alpha, but other clients do not).
"""

from collections.abc import Sequence

import grpc
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1ALPHA_SERVICE_NAME = reflection.SERVICE_NAME
V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
_V1_FILE_NAME = "grpc/reflection/v1/reflection.proto"


class _MethodResolvingPool:
    """A descriptor pool in which a method's full name resolves to the file of its service.

    Everything but `FindFileContainingSymbol` is passed through to the wrapped pool.
    """

    def __init__(self, pool: descriptor_pool.DescriptorPool) -> None:
        self._pool = pool

    def FindFileContainingSymbol(self, symbol: str) -> descriptor.FileDescriptor:
        """The file declaring `symbol`, where `symbol` may also be `package.Service.Method`."""
        try:
            return self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            service_name, _, method_name = symbol.rpartition(".")
            service = self._pool.FindServiceByName(service_name)
            if method_name not in service.methods_by_name:
                raise
            return service.file

    def __getattr__(self, name: str) -> object:
        return getattr(self._pool, name)


def _register_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    """Add grpc.reflection.v1's file to `pool`, so reflection can describe itself as v1 too.

    v1 is v1alpha with the package renamed (same messages, same field numbers), so the file is
    derived from the v1alpha one that grpcio-reflection ships rather than written out again.
    """
    try:
        pool.FindFileByName(_V1_FILE_NAME)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old_prefix, new_prefix = f".{proto.package}.", ".grpc.reflection.v1."
    proto.name = _V1_FILE_NAME
    proto.package = new_prefix.strip(".")
    # The v1alpha options name v1alpha's language packages and mark the file deprecated.
    proto.ClearField("options")
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = field.type_name.replace(old_prefix, new_prefix)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old_prefix, new_prefix)
            method.output_type = method.output_type.replace(old_prefix, new_prefix)
    pool.Add(proto)


def enable_reflection(server: grpc.Server, service_names: Sequence[str]) -> None:
    """Offer server reflection (v1 and v1alpha) for `service_names` and for reflection itself.

    Must be called before `server.start()`.
    """
    pool = descriptor_pool.Default()
    _register_v1_descriptor(pool)
    names = dict.fromkeys((*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME))
    servicer = reflection.ReflectionServicer(names, pool=_MethodResolvingPool(pool))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    # v1's messages are byte-for-byte v1alpha's on the wire, so the same servicer answers both.
    v1_handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    v1_service = grpc.method_handlers_generic_handler(
        V1_SERVICE_NAME, {"ServerReflectionInfo": v1_handler}
    )
    server.add_generic_rpc_handlers((v1_service,))
