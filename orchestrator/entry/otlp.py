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
_KIND = {kind: b"\x30" + _SMALL[code] for code, kind in enumerate(spans.KINDS, start=1)}
# 16 flags (fixed32): the parent's is-remote bit is known (0x100), and set (0x200)
_LOCAL = b"\x85\x01" + _FIXED32(0x100)
_REMOTE = b"\x85\x01" + _FIXED32(0x300)


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
    scope = _ld(b"\x0a", _ld(b"\x0a", spans.SCOPE.encode()))  # 1 InstrumentationScope.name
    scope_spans = scope + b"".join([_ld(b"\x12", _span(span)) for span in batch])  # 2 spans
    return _ld(b"\x0a", head + _ld(b"\x12", scope_spans))  # resource_spans: 1, 2


def _resource_head(resource: Resource) -> bytes:
    """ResourceSpans.resource, encoded once a sender."""
    return _ld(b"\x0a", _attributes(b"\x0a", resource.attributes))


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
        _ld(b"\x2a", span.name.encode()),  # 5 name
        _KIND[span.kind],  # 6 kind
        b"\x39",  # 7 start_time_unix_nano
        _FIXED64(span.start),
        b"\x41",  # 8 end_time_unix_nano
        _FIXED64(span.end),
        _attributes(b"\x4a", span.attributes),  # 9 attributes
    )
    for name, at, attributes in span.events:  # 11 events: time, name, attributes
        event = b"\x09" + _FIXED64(at) + _ld(b"\x12", name.encode())
        parts.append(_ld(b"\x5a", event + _attributes(b"\x1a", attributes)))
    if span.error is None:
        parts.append(b"\x7a\x00")  # 15 status: unset
    else:  # message, code ERROR
        parts.append(_ld(b"\x7a", _ld(b"\x12", span.error.encode()) + b"\x18\x02"))
    parts.append(_REMOTE if span.parent_id and span.parent_remote else _LOCAL)  # 16 flags
    return b"".join(parts)


def _attributes(tag: bytes, attributes: Mapping[str, Any]) -> bytes:
    """A repeated KeyValue field (its tag given): the keys' encoding kept, as they are few
    (the engine's own names)."""
    keys = _KEYS
    out = []
    for key, value in attributes.items():
        encoded = keys.get(key)
        if encoded is None:
            encoded = _ld(b"\x0a", key.encode())
            if len(keys) < 1000:
                keys[key] = encoded
        out.append(_ld(tag, encoded + _ld(b"\x12", _any(value))))
    return b"".join(out)


_KEYS: dict[str, bytes] = {}


def _any(value: Any) -> bytes:
    """An AnyValue."""
    if isinstance(value, str):
        return _ld(b"\x0a", value.encode())
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + _varint(value & 0xFFFF_FFFF_FFFF_FFFF)  # int64: two's complement
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    if isinstance(value, (list, tuple)):  # 5 ArrayValue of 1 values
        return _ld(b"\x2a", b"".join([_ld(b"\x0a", _any(item)) for item in value]))
    return _ld(b"\x0a", str(value).encode())


def _ld(tag: bytes, data: bytes) -> bytes:
    """A length-delimited field: its tag, the length, the bytes."""
    size = len(data)
    return tag + (_SMALL[size] if size < 128 else _varint(size)) + data


def _varint(value: int) -> bytes:
    if value < 128:
        return _SMALL[value]
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
