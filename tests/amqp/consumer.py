"""An AMQP 0-9-1 peer for Portico's tests, on PyPI's pika: it declares and
deletes exchanges and queues, consumes, publishes with confirms, calls over
direct reply-to and answers requests as an RPC responder.

Usage: consumer.py AMQP_URL

It prints `{"ready": true}` once connected, then reads one JSON command a
line on stdin and answers each, in order, with one line `{"reply": {...}}`
or `{"error": "..."}`. Every message it consumes, and every request its
responders receive, is printed as soon as it arrives as one line
`{"message": {...}}` (see `described`). When stdin closes it deletes the
transient exchanges it declared, and exits; a queue that is not durable is
exclusive to its connection, so it goes with the peer. Durable ones stay
(they are for a test's own broker, which it restarts).
Commands (`op`), with their other fields:

- declare_exchange: exchange, type (direct), durable (false)
- delete_exchange: exchange
- declare_queue: queue ("" for a server-named one), durable (false; else exclusive),
  max_length and reject_publish (x-max-length, overflow reject-publish);
  answers the queue's name
- bind: queue, exchange, routing_key
- delete_queue: queue
- count: queue; answers its message and consumer counts
- consume: queue; cancel: queue (stops consuming, or responding; messages
  then wait in the queue)
- publish: exchange, routing_key, body (base64), mandatory, properties
  (content_type, delivery_mode, message_id, correlation_id, reply_to,
  headers); answers the confirm: "ack", "nack" or "returned"
- call: exchange, routing_key, body, properties, timeout_ms; publishes with
  reply_to amq.rabbitmq.reply-to and a fresh correlation_id, and answers the
  reply as a message, or {"timeout": true}
- respond: queue, prefix (base64, put before the request's body),
  content_type, headers, delay_ms, silent (never answers); consumes requests
  and answers each on its reply_to with its correlation_id
"""

import base64
import datetime
import decimal
import json
import sys
import threading
import uuid

import pika
import pika.exceptions

DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"


def emit(line):
    print(json.dumps(line), flush=True)


def plain(value):
    """A header value as JSON: text decoded, tables and arrays recursed."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    if isinstance(value, (datetime.datetime, decimal.Decimal)):
        return str(value)
    return value


def described(queue, method, properties, body):
    """A received message, for the test: its body (base64) and properties."""
    return {
        "queue": queue,
        "exchange": method.exchange,
        "routing_key": method.routing_key,
        "body": base64.b64encode(body).decode(),
        "content_type": properties.content_type,
        "delivery_mode": properties.delivery_mode,
        "message_id": properties.message_id,
        "correlation_id": properties.correlation_id,
        "timestamp": properties.timestamp,
        "app_id": properties.app_id,
        "reply_to": properties.reply_to,
        "headers": plain(properties.headers or {}),
    }


def basic_properties(fields):
    return pika.BasicProperties(
        content_type=fields.get("content_type"),
        delivery_mode=fields.get("delivery_mode"),
        message_id=fields.get("message_id"),
        correlation_id=fields.get("correlation_id"),
        reply_to=fields.get("reply_to"),
        headers=fields.get("headers"),
    )


class Peer:
    def __init__(self, url):
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.admin = self.publisher = self.consumers = self.caller = None
        self.open_closed_channels()
        self.calls = {}
        self.transient_exchanges = set()

    def open_closed_channels(self):
        """Opens the channels the broker closed (after a channel error)."""
        if self.admin is None or self.admin.is_closed:
            self.admin = self.connection.channel()
        if self.publisher is None or self.publisher.is_closed:
            self.publisher = self.connection.channel()
            self.publisher.confirm_delivery()
        if self.consumers is None or self.consumers.is_closed:
            self.consumers = self.connection.channel()
            self.consumer_tags = {}
        if self.caller is None or self.caller.is_closed:
            self.caller = self.connection.channel()
            self.caller.basic_consume(DIRECT_REPLY_TO, self.replied, auto_ack=True)

    def clean_up(self):
        """Deletes the transient exchanges it declared, and disconnects."""
        for exchange in self.transient_exchanges:
            self.admin.exchange_delete(exchange)
        self.connection.close()

    def handle(self, line):
        """Runs one command line and prints its answer."""
        try:
            command = json.loads(line)
            answer = getattr(self, "op_" + command.pop("op"))(**command)
        except pika.exceptions.ChannelClosed as error:
            # Say, a declaration that differs from the existing one, or a
            # publish to a missing exchange: fresh channels for what follows.
            self.open_closed_channels()
            emit({"error": str(error)})
            return
        except Exception as error:  # the test reads the failure, the peer goes on
            emit({"error": f"{type(error).__name__}: {error}"})
            return
        if answer is not None:
            emit({"reply": answer})

    def op_declare_exchange(self, exchange, type="direct", durable=False):
        self.admin.exchange_declare(exchange, exchange_type=type, durable=durable)
        if not durable:
            self.transient_exchanges.add(exchange)
        return {}

    def op_delete_exchange(self, exchange):
        self.admin.exchange_delete(exchange)
        self.transient_exchanges.discard(exchange)
        return {}

    def op_declare_queue(self, queue, durable=False, max_length=None, reject_publish=False):
        arguments = {}
        if max_length is not None:
            arguments["x-max-length"] = max_length
        if reject_publish:
            arguments["x-overflow"] = "reject-publish"
        declared = self.admin.queue_declare(queue, durable=durable, exclusive=not durable, arguments=arguments)
        return {"queue": declared.method.queue}

    def op_bind(self, queue, exchange, routing_key):
        self.admin.queue_bind(queue, exchange, routing_key=routing_key)
        return {}

    def op_delete_queue(self, queue):
        self.admin.queue_delete(queue)
        return {}

    def op_count(self, queue):
        declared = self.admin.queue_declare(queue, passive=True)
        return {"messages": declared.method.message_count, "consumers": declared.method.consumer_count}

    def op_consume(self, queue):
        def received(_channel, method, properties, body):
            emit({"message": described(queue, method, properties, body)})

        self.consumer_tags[queue] = self.consumers.basic_consume(queue, received, auto_ack=True)
        return {}

    def op_cancel(self, queue):
        self.consumers.basic_cancel(self.consumer_tags.pop(queue))
        return {}

    def op_publish(self, exchange, routing_key, body, mandatory=False, properties=None):
        try:
            self.publisher.basic_publish(
                exchange, routing_key, base64.b64decode(body), basic_properties(properties or {}), mandatory=mandatory
            )
        except pika.exceptions.UnroutableError:
            return {"confirm": "returned"}
        except pika.exceptions.NackError:
            return {"confirm": "nack"}
        return {"confirm": "ack"}

    def op_call(self, exchange, routing_key, body, timeout_ms, properties=None):
        correlation_id = str(uuid.uuid4())
        fields = dict(properties or {}, reply_to=DIRECT_REPLY_TO, correlation_id=correlation_id)
        self.caller.basic_publish(exchange, routing_key, base64.b64decode(body), basic_properties(fields))
        # The reply is dispatched after this command returns, never before.
        self.calls[correlation_id] = self.connection.call_later(timeout_ms / 1000, lambda: self.timed_out(correlation_id))
        return None  # answered when the reply comes, or the time is up

    def replied(self, _channel, method, properties, body):
        timer = self.calls.pop(properties.correlation_id, None)
        if timer is not None:
            self.connection.remove_timeout(timer)
            emit({"reply": described(DIRECT_REPLY_TO, method, properties, body)})

    def timed_out(self, correlation_id):
        if self.calls.pop(correlation_id, None) is not None:
            emit({"reply": {"timeout": True}})

    def op_respond(self, queue, prefix="", content_type=None, headers=None, delay_ms=0, silent=False):
        prefix = base64.b64decode(prefix)

        def requested(channel, method, properties, body):
            emit({"message": described(queue, method, properties, body)})
            if silent:
                return
            reply = pika.BasicProperties(
                correlation_id=properties.correlation_id, content_type=content_type, headers=headers
            )

            def answer():
                channel.basic_publish("", properties.reply_to, prefix + body, reply)

            if delay_ms:
                self.connection.call_later(delay_ms / 1000, answer)
            else:
                answer()

        self.consumer_tags[queue] = self.consumers.basic_consume(queue, requested, auto_ack=True)
        return {}


def main():
    peer = Peer(sys.argv[1])
    stdin_open = threading.Event()
    stdin_open.set()

    def read_commands():
        for line in sys.stdin:
            peer.connection.add_callback_threadsafe(lambda line=line: peer.handle(line))
        stdin_open.clear()
        peer.connection.add_callback_threadsafe(lambda: None)  # wakes the loop up

    threading.Thread(target=read_commands, daemon=True).start()
    emit({"ready": True})
    while stdin_open.is_set():
        peer.connection.process_data_events(time_limit=None)
    peer.clean_up()


if __name__ == "__main__":
    main()
