"""An OTLP trace receiver for Portico's tests, on PyPI's opentelemetry-proto and grpcio.

Listens on two ports of the system's choice on 127.0.0.1:
  - OTLP/gRPC: opentelemetry.proto.collector.trace.v1.TraceService/Export;
  - HTTP/1.1: OTLP/HTTP `POST /v1/traces` (application/x-protobuf, gzip or
    not), answered 200 with an empty ExportTraceServiceResponse; and
    `GET /spans`, the JSON list of every span received so far, in order.
Prints `{"grpc": <port>, "http": <port>}` on stdout once both serve, and
stops when its stdin closes (or when it is killed).

A span is recorded before its export is answered, so `GET /spans` after an
answered export always shows it. Each span is flattened to one JSON object:
ids as lowercase hex (parent_span_id null for a root), kind and status code
as their enum names, times as unix nanoseconds, attributes (the span's and
its resource's) as a JSON object of their values, and the transport that
delivered it (`grpc` or `http`).
"""

import base64
import gzip
import json
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

PROTOBUF = "application/x-protobuf"


def any_value(value):
    """An AnyValue as JSON: scalars as such, arrays as lists, kvlists as objects, bytes as base64."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return None if kind is None else getattr(value, kind)


def attributes(key_values):
    return {pair.key: any_value(pair.value) for pair in key_values}


def flatten(request, transport):
    """The spans of an ExportTraceServiceRequest, as JSON objects."""
    for resource_spans in request.resource_spans:
        resource_attributes = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield {
                    "transport": transport,
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex() or None,
                    "trace_state": span.trace_state,
                    "flags": span.flags,
                    "name": span.name,
                    "kind": trace_pb2.Span.SpanKind.Name(span.kind),
                    "start_time_unix_nano": span.start_time_unix_nano,
                    "end_time_unix_nano": span.end_time_unix_nano,
                    "status_code": trace_pb2.Status.StatusCode.Name(span.status.code),
                    "status_message": span.status.message,
                    "attributes": attributes(span.attributes),
                    "resource_attributes": resource_attributes,
                    "scope_name": scope_spans.scope.name,
                    "scope_version": scope_spans.scope.version,
                }


class Spans:
    """Every span received, in order, shared by both transports."""

    def __init__(self):
        self.lock = threading.Lock()
        self.spans = []

    def record(self, request, transport):
        spans = list(flatten(request, transport))
        with self.lock:
            self.spans.extend(spans)

    def json(self):
        with self.lock:
            return json.dumps(self.spans)


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, spans):
        self.spans = spans

    def Export(self, request, context):
        self.spans.record(request, "grpc")
        return trace_service_pb2.ExportTraceServiceResponse()


def http_handler(spans):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            if self.path.split("?", 1)[0] != "/v1/traces":
                return self.answer(404, "text/plain", b"only /v1/traces takes a POST\n")
            length = self.headers.get("Content-Length")
            if length is None:
                return self.answer(411, "text/plain", b"a Content-Length is required\n")
            body = self.rfile.read(int(length))
            content_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
            if content_type != PROTOBUF:
                return self.answer(415, "text/plain", f"only {PROTOBUF} is accepted, not {content_type!r}\n".encode())
            request = trace_service_pb2.ExportTraceServiceRequest()
            try:
                if self.headers.get("Content-Encoding", "identity").strip().lower() == "gzip":
                    body = gzip.decompress(body)
                request.ParseFromString(body)
            except (OSError, EOFError, DecodeError) as error:
                return self.answer(400, "text/plain", f"not an ExportTraceServiceRequest: {error}\n".encode())
            spans.record(request, "http")
            self.answer(200, PROTOBUF, trace_service_pb2.ExportTraceServiceResponse().SerializeToString())

        def do_GET(self):
            if self.path != "/spans":
                return self.answer(404, "text/plain", b"only /spans takes a GET\n")
            self.answer(200, "application/json", spans.json().encode())

        def answer(self, status, content_type, body):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):
            sys.stderr.write(f"http: {format % args}\n")

    return Handler


def main():
    spans = Spans()
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(spans), grpc_server)
    grpc_port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    http_server = ThreadingHTTPServer(("127.0.0.1", 0), http_handler(spans))
    http_server.daemon_threads = True
    threading.Thread(target=http_server.serve_forever, daemon=True).start()
    print(json.dumps({"grpc": grpc_port, "http": http_server.server_address[1]}), flush=True)
    sys.stdin.read()
    http_server.shutdown()
    grpc_server.stop(grace=None)


if __name__ == "__main__":
    main()
