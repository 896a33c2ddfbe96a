"""Requests serialized once, before the load starts, from ghz-style JSON call data."""

from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import descriptor, json_format, message_factory

from loadtest.config import ConfigError


def serialize_requests(
    method: descriptor.MethodDescriptor, data: Sequence[Mapping[str, Any]]
) -> tuple[bytes, ...]:
    """Each JSON object of `data` as the method's serialized request message.

    The JSON is protobuf's JSON mapping, as ghz reads it: bytes fields in base64, enums by name
    or number, 64-bit integers as strings or numbers, field names as in the .proto or camelCase.
    A server-streaming method's request is one message, as a unary method's.
    """
    if method.client_streaming:
        raise ConfigError(
            f"{method.full_name} streams requests; only unary and server-streaming calls are run"
        )
    request_class = message_factory.GetMessageClass(method.input_type)
    serialized = []
    for index, item in enumerate(data):
        request = request_class()
        try:
            json_format.ParseDict(dict(item), request)
        except json_format.ParseError as error:
            raise ConfigError(
                f"call data #{index} is not a {method.input_type.full_name}: {error}"
            ) from error
        serialized.append(request.SerializeToString())
    return tuple(serialized)
