"""The proto3 JSON oracle: Python's google.protobuf.json_format on shop.proto's messages.

Reads one case per line on stdin and writes one answer per line on stdout,
in order, so that a test runs many cases in one start of Python. A case:

    {"type": "portico.test.v1.AllTypes",      # of shop.proto, its imports or google/rpc
     "json": "<JSON text>" | "binary": "<base64 of the encoded message>",
     "proto_names": false, "emit_defaults": false, "enums_as_ints": false,
     "ignore_unknown": false}                  # options, each false when left out

An answer is {"json": "<MessageToJson text>", "binary": "<base64>"} or,
when json_format refuses the input, {"error": "<why>"}.
"""

import base64
import json
import sys

from google.protobuf import json_format, message_factory
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2  # noqa: F401 (google.rpc.Status and its details, for error bodies)

import shop_protos

shop_pb2, _, _ = shop_protos.load()
POOL = shop_pb2.DESCRIPTOR.pool


def answer(case):
    message = message_factory.GetMessageClass(POOL.FindMessageTypeByName(case["type"]))()
    try:
        if "json" in case:
            json_format.Parse(case["json"], message, ignore_unknown_fields=case.get("ignore_unknown", False))
        else:
            message.ParseFromString(base64.b64decode(case["binary"]))
        text = json_format.MessageToJson(
            message,
            preserving_proto_field_name=case.get("proto_names", False),
            always_print_fields_with_no_presence=case.get("emit_defaults", False),
            use_integers_for_enums=case.get("enums_as_ints", False),
            indent=None,
            ensure_ascii=False,
        )
    except (json_format.Error, DecodeError) as error:
        return {"error": str(error)}
    return {"json": text, "binary": base64.b64encode(message.SerializeToString()).decode()}


def main():
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(answer(json.loads(line))), flush=True)


if __name__ == "__main__":
    main()
