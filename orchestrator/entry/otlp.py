"""The engine's spans sent to an OTLP/HTTP endpoint, encoded here.

Why by hand: OpenTelemetry's encoder (opentelemetry-exporter-otlp-proto-common) turns
each span into protobuf message objects, about 50 us a span measured (timeit, this 2-core
machine); building the same objects from orchestrator.runtime.spans.Recorded directly
still took 24 us; writing the wire format here takes 7 us. The bytes are an
ExportTraceServiceRequest that the OTLP protobuf classes read back equal to the SDK's
encoding of the same spans (tests/runtime/test_spans.py checks it field by field).

The request goes through the OTLPSpanExporter the settings made (its endpoint, headers,
compression, timeout and retries from the standard OTEL_EXPORTER_OTLP_* variables), by
its HTTP client: when a version of the exporter has none, the spans go through its
`export` as ReadableSpan instead, at the SDK's cost.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from orchestrator.runtime import spans

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)

_FIXED64 = struct.Struct("<Q").pack
_FIXED32 = struct.Struct("<I").pack
_DOUBLE = struct.Struct("<d").pack
_SMALL = [bytes((n,)) for n in range(128)]  # one-byte varints
_KIND = {kind: _SMALL[code] for code, kind in enumerate(spans.KINDS, start=1)}
_HAS_IS_REMOTE = 0x100  # SpanFlags: the parent's is-remote bit is known
_IS_REMOTE = 0x200  # SpanFlags: the parent came from another process


def sender(exporter: SpanExporter, resource: Resource) -> spans.Send:
    """A send of recorded spans through `exporter`: encoded here when it is the OTLP/HTTP
    exporter with its HTTP client, else by `spans.exporting`."""
    client = getattr(exporter, "_client", None)
    if not callable(getattr(client, "export", None)):
        return spans.exporting(exporter, resource)
    head = _resource_head(resource)

    def send(batch: Sequence[spans.Recorded]) -> None:
        result = client.export(encode(batch, head))  # type: ignore[union-attr]
        if not getattr(result, "success", False):
            log.warning("the OTLP endpoint did not take %d spans", len(batch))

    return send


def encode(batch: Sequence[spans.Recorded], head: bytes) -> bytes:
    """An ExportTraceServiceRequest of `batch`, under the resource encoded in `head`."""
    scope = _field(1, _field(1, spans.SCOPE.encode()))  # InstrumentationScope.name
    scope_spans = scope + b"".join([_field(2, _span(span)) for span in batch])
    return _field(1, head + _field(2, scope_spans))  # resource_spans {resource, scope_spans}


def _resource_head(resource: Resource) -> bytes:
    """ResourceSpans.resource, encoded once a sender."""
    return _field(1, _attributes(1, resource.attributes))


def _span(span: spans.Recorded) -> bytes:
    parts = [
        b"\x0a\x10",  # 1 trace_id
        span.trace_id.to_bytes(16, "big"),
        b"\x12\x08",  # 2 span_id
        span.span_id.to_bytes(8, "big"),
    ]
    if span.parent_id:
        parts += (b"\x22\x08", span.parent_id.to_bytes(8, "big"))  # 4 parent_span_id
    parts += (
        _field(5, span.name.encode()),
        b"\x30",  # 6 kind
        _KIND[span.kind],
        b"\x39",  # 7 start_time_unix_nano
        _FIXED64(span.start),
        b"\x41",  # 8 end_time_unix_nano
        _FIXED64(span.end),
        _attributes(9, span.attributes),
    )
    for name, at, attributes in span.events:  # 11 events
        event = b"\x09" + _FIXED64(at) + _field(2, name.encode()) + _attributes(3, attributes)
        parts.append(_field(11, event))
    if span.error is None:
        parts.append(b"\x7a\x00")  # 15 status: unset
    else:
        parts.append(_field(15, _field(2, span.error.encode()) + b"\x18\x02"))  # code ERROR
    flags = _HAS_IS_REMOTE | (_IS_REMOTE if span.parent_id and span.parent_remote else 0)
    parts += (b"\x85\x01", _FIXED32(flags))  # 16 flags
    return b"".join(parts)


def _attributes(number: int, attributes: Mapping[str, Any]) -> bytes:
    """Repeated KeyValue field `number`."""
    return b"".join(
        [
            _field(number, _field(1, key.encode()) + _field(2, _any(value)))
            for key, value in attributes.items()
        ]
    )


def _any(value: Any) -> bytes:
    """An AnyValue."""
    if isinstance(value, str):
        return _field(1, value.encode())
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value & 0xFFFF_FFFF_FFFF_FFFF)  # int64: two's complement
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    if isinstance(value, (list, tuple)):  # ArrayValue
        return _field(5, b"".join([_field(1, _any(item)) for item in value]))
    return _field(1, str(value).encode())


def _field(number: int, data: bytes) -> bytes:
    """A length-delimited field."""
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _varint(value: int) -> bytes:
    if value < 128:
        return _SMALL[value]
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
