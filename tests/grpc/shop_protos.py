"""Compiles shop.proto with grpc_tools' protoc and imports the generated modules.

The stubs are made afresh in a temporary directory at each start, so that
nothing generated is committed or goes stale. googleapis-common-protos
provides google/api/*.proto; grpc_tools provides google/protobuf/*.proto.
"""

import importlib
import sys
import tempfile
from importlib import resources
from pathlib import Path

import google.api.annotations_pb2
from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
PROTO_FILES = ("shop.proto", "shop_types.proto")


def load():
    """Returns the modules shop_pb2, shop_types_pb2 and shop_pb2_grpc."""
    include = [
        HERE,
        resources.files("grpc_tools") / "_proto",
        Path(google.api.annotations_pb2.__file__).parents[2],
    ]
    with tempfile.TemporaryDirectory(prefix="portico-shop-stubs-") as out:
        args = ["protoc", *(f"-I{path}" for path in include), f"--python_out={out}", f"--grpc_python_out={out}"]
        if protoc.main([*args, *PROTO_FILES]) != 0:
            sys.exit(f"protoc could not compile {', '.join(PROTO_FILES)} (see above)")
        sys.path.insert(0, out)
        try:
            return tuple(importlib.import_module(name) for name in ("shop_pb2", "shop_types_pb2", "shop_pb2_grpc"))
        finally:
            sys.path.remove(out)
