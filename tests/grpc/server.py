"""A gRPC server of portico.test.v1.Shop (shop.proto) for Portico's tests.

Listens on 127.0.0.1 on a port of the system's choice, prints `PORT <n>`
on stdout once it serves, and stops when its stdin closes (or when it is
killed). Server reflection is on, so grpcurl needs no descriptor files.
With `--tls CERT KEY` (PEM files) it serves gRPC over TLS instead of h2c.
"""

import argparse
import collections
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
from google.protobuf import any_pb2, empty_pb2, timestamp_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

import shop_protos

shop_pb2, shop_types_pb2, shop_pb2_grpc = shop_protos.load()

DEFAULT_FAILURE_MESSAGE = "échec demandé: 100% voulu"
STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}


def until_cancelled(context, seconds):
    """Waits `seconds`; True when the call ended (cancelled, deadline) first."""
    ended = threading.Event()
    return not context.add_callback(ended.set) or ended.wait(seconds)


def packed(message):
    detail = any_pb2.Any()
    detail.Pack(message)
    return detail


class CallCounter(grpc.ServerInterceptor):
    """Counts the calls received, by method name."""

    def __init__(self):
        self.received = collections.Counter()
        self.lock = threading.Lock()

    def intercept_service(self, continuation, handler_call_details):
        with self.lock:
            self.received[handler_call_details.method.rsplit("/", 1)[-1]] += 1
        return continuation(handler_call_details)


class Shop(shop_pb2_grpc.ShopServicer):
    def __init__(self, counter):
        self.counter = counter
        self.cancelled = []

    def GetItem(self, request, context):
        return shop_pb2.GetItemResponse(item=shop_types_pb2.Item(id=request.id, name=f"item {request.id}"), request=request)

    def GetBook(self, request, context):
        return shop_pb2.Book(name=request.name, title=f"the book at {request.name}")

    def GetFile(self, request, context):
        return shop_pb2.File(path=request.path, size=len(request.path))

    def CreateItem(self, request, context):
        return request

    def UpdateItem(self, request, context):
        return request

    def ArchiveItem(self, request, context):
        return request

    def GetItemEnvelope(self, request, context):
        return shop_pb2.ItemEnvelope(item=shop_types_pb2.Item(id=request.id, name=f"item {request.id}"), etag=f'"{request.id}"')

    def DeleteItem(self, request, context):
        return request

    def Echo(self, request, context):
        return request

    def Fail(self, request, context):
        if request.code not in STATUS_CODES:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{request.code} is no google.rpc.Code")
        if request.code == grpc.StatusCode.OK.value[0]:
            return empty_pb2.Empty()
        if request.after_headers:
            context.send_initial_metadata((("x-fail-stage", "after-headers"),))
        message = request.message or DEFAULT_FAILURE_MESSAGE
        if not request.with_details:
            context.abort(STATUS_CODES[request.code], message)
        details = [
            packed(error_details_pb2.BadRequest(field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field="code", description="the failure was asked for"),
            ])),
            packed(error_details_pb2.ErrorInfo(reason="REQUESTED_FAILURE", domain="test.portico", metadata={"code": str(request.code)})),
        ]
        context.abort_with_status(rpc_status.to_status(status_pb2.Status(code=request.code, message=message, details=details)))

    def Sleep(self, request, context):
        if until_cancelled(context, request.ms / 1000):
            self.cancelled.append("Sleep")
        return request

    def ListItems(self, request, context):
        fail_at = request.fail_after if request.HasField("fail_after") else None
        for index in range(request.count):
            if index == fail_at:
                break
            if index > 0 and until_cancelled(context, request.interval_ms / 1000):
                self.cancelled.append("ListItems")
                return
            created_at = timestamp_pb2.Timestamp()
            created_at.GetCurrentTime()
            yield shop_types_pb2.Item(id=f"item-{index}", name=f"item {index}", price_cents=index, created_at=created_at)
        if fail_at is not None:
            code = STATUS_CODES.get(request.fail_code) if request.fail_code else None
            context.abort(code or grpc.StatusCode.INTERNAL, request.fail_message)

    def CollectItems(self, request_iterator, context):
        summary = shop_pb2.CollectSummary()
        for item in request_iterator:
            summary.count += 1
            summary.total_price_cents += item.price_cents
            summary.ids.append(item.id)
        return summary

    def EchoMetadata(self, request, context):
        received = context.invocation_metadata()
        context.send_initial_metadata(tuple((f"x-echo-{key}", value) for key, value in received))
        context.set_trailing_metadata(tuple((f"x-echo-trailer-{key}", value) for key, value in received))
        echo = shop_pb2.MetadataEcho()
        for key, value in received:
            entry = echo.entries.add(key=key)
            if key.endswith("-bin"):
                entry.binary_value = value
            else:
                entry.value = value
        remaining = context.time_remaining()
        if remaining is not None:
            echo.deadline_ms.value = round(remaining * 1000)
        return echo

    def GetCalls(self, request, context):
        with self.counter.lock:
            received = dict(self.counter.received)
        return shop_pb2.Calls(received=received, cancelled=self.cancelled)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="PEM certificate chain and private key")
    args = parser.parse_args()

    counter = CallCounter()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64), interceptors=(counter,))
    shop_pb2_grpc.add_ShopServicer_to_server(Shop(counter), server)
    service_name = shop_pb2.DESCRIPTOR.services_by_name["Shop"].full_name
    reflection.enable_server_reflection((service_name, reflection.SERVICE_NAME), server)
    if args.tls:
        cert, key = (Path(path).read_bytes() for path in args.tls)
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials([(key, cert)]))
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"PORT {port}", flush=True)
    sys.stdin.read()
    server.stop(grace=None)


if __name__ == "__main__":
    main()
