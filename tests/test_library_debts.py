"""The names of kombu, Celery, Flower, moto and waitress that carcelery overrides, patches or relies on, checked.

Checked against the installed versions. One row per debt: the library's name,
where carcelery makes the debt, the parameters it was written for, and
library code that must still mention the name (the caller that makes the override matter; for an attribute, the code
that sets or reads it). An upgrade that renames, drops, reshapes or stops
calling one of them fails here with a message naming the row. Names are the
libraries' (``module:Class.name``), not carcelery's module layout, but for
``made``: carcelery's class by its public path, its function that relies on it, or the emulator's patch.

Rows ``why="uses"`` are private names that overrides call or read: they fail
loudly when they go, but maybe only on a rare path (a rollback, a retry).
"""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
import types
from dataclasses import dataclass

import pytest

from carcelery.embedded import emulator


@dataclass(frozen=True)
class Debt:
    library: str  # "module:Qual.name" of the library's name
    made: str  # "module:Name": carcelery's class that overrides it, or the emulator's function that patches it
    why: str  # "speed", "correctness", "feature", "uses" (called or read by an override) or "added" (the library lacks it)
    params: str | None  # the parameters it was written for: names, "*"/"**" for rest parameters; None: not a function
    mentioned_by: tuple  # "module:Qual.name" whose code names it, or ("module:Qual.name", "text of its source")

    def __str__(self) -> str:
        return f"{self.library} (made in {self.made}, {self.why})"


SQS, VIRTUAL, DYNAMO, BASE = ("kombu.transport.SQS", "kombu.transport.virtual.base",
                              "celery.backends.dynamodb", "celery.backends.base")
CHANNEL, TRANSPORT, BACKEND = "carcelery.transport:Channel", "carcelery.transport:Transport", \
    "carcelery.backend:OncePerPartDynamoDBBackend"
EMULATOR = "carcelery.embedded.emulator"
QUEUE, SQS_BACKEND, MOTO_SQS = "moto.sqs.models:Queue", "moto.sqs.models:SQSBackend", "moto.sqs.models"
DISPATCHER = "moto.moto_server.werkzeug_app:DomainDispatcherApplication"
FLOWER_BROKER, OURS_FLOWER = "flower.utils.broker", "carcelery.commands.flower_broker"
SQS_RESPONSE = "moto.sqs.responses:SQSResponse"
CONSUMER, REJECTING = "celery.worker.consumer.consumer:Consumer", "carcelery.rejecting:Consumer"
SENDING = "carcelery.pipeline.sending:dispatch"

DEBTS = [
    # kombu's SQS transport (carcelery.transport).
    Debt(f"{SQS}:Channel.sqs", CHANNEL, "speed", "self, queue", (f"{SQS}:Channel._put",)),
    Debt(f"{SQS}:Channel._put_fanout", CHANNEL, "speed", "self, exchange, message, routing_key, **kwargs",
         ("kombu.transport.virtual.exchange:FanoutExchange.deliver",)),
    Debt(f"{VIRTUAL}:Channel.exchange_declare", CHANNEL, "feature",
         "self, exchange, type, durable, auto_delete, arguments, nowait, passive", ("kombu.entity:Exchange.declare",)),
    Debt(f"{VIRTUAL}:Channel.queue_declare", CHANNEL, "correctness", "self, queue, passive, **kwargs",
         ("kombu.entity:Queue.queue_declare",)),
    Debt(f"{SQS}:Channel._create_queue", CHANNEL, "correctness", "self, queue_name, attributes",
         (f"{SQS}:Channel._new_queue",)),
    Debt(f"{VIRTUAL}:Channel.after_reply_message_received", CHANNEL, "correctness", "self, queue",
         ("kombu.pidbox:Mailbox._collect",)),
    Debt(f"{SQS}:Channel._receive_message", CHANNEL, "correctness",
         "self, queue, max_number_of_messages, wait_time_seconds", (f"{SQS}:Channel._get_bulk", f"{SQS}:Channel._get")),
    Debt(f"{SQS}:Channel._get_async", CHANNEL, "correctness", "self, queue, count, callback",
         (f"{SQS}:Channel._get_bulk_async",)),
    Debt(f"{VIRTUAL}:Channel._lookup", CHANNEL, "feature", "self, exchange, routing_key, default",
         ("kombu.transport.virtual.exchange:DirectExchange.deliver",)),
    Debt(f"{SQS}:Channel._messages_to_python", CHANNEL, "correctness", "self, messages, queue",
         (f"{SQS}:Channel._get_bulk", f"{SQS}:Channel._get")),
    Debt(f"{SQS}:Channel._loop1", CHANNEL, "correctness", "self, queue, messages_fetched",
         (f"{SQS}:Channel._schedule_queue",)),
    Debt(f"{SQS}:Channel._get_from_sqs", CHANNEL, "correctness", "self, queue_name, queue_url, connection, count, callback",
         (f"{SQS}:Channel._get_async",)),
    Debt(f"{SQS}:Channel._on_messages_ready", CHANNEL, "correctness", "self, queue, qname, messages",
         (f"{SQS}:Channel._get_async",)),
    Debt(f"{SQS}:Channel._prepare_json_payload", CHANNEL, "correctness", "self, text",
         (f"{SQS}:Channel._message_to_python",)),
    Debt(f"{SQS}:Channel._get_message_estimate", CHANNEL, "speed", "self, max_if_unlimited",
         (f"{SQS}:Channel._get_bulk", f"{SQS}:Channel._get_bulk_async")),
    Debt(f"{SQS}:Channel.basic_ack", CHANNEL, "speed", "self, delivery_tag, multiple", ("kombu.message:Message.ack",)),
    Debt(f"{SQS}:Channel.basic_reject", CHANNEL, "correctness", "self, delivery_tag, requeue",
         ("kombu.message:Message.reject", "kombu.message:Message.requeue")),
    Debt(f"{SQS}:Channel.close", CHANNEL, "correctness", "self", (f"{VIRTUAL}:Transport.close_connection",)),
    Debt(f"{SQS}:Channel._restore", CHANNEL, "correctness", "self, message, unwanted_delivery_info",
         (f"{VIRTUAL}:QoS.restore_unacked",)),
    Debt(f"{SQS}:Transport.__init__", TRANSPORT, "feature", "self, client, **kwargs",
         (("kombu.connection:Connection.create_transport", "(client=self)"),)),
    Debt(f"{SQS}:Transport.implements", TRANSPORT, "feature", None,
         ("kombu.connection:Connection.supports_exchange_type",
          ("celery.worker.consumer.control:Control.include_if", "supports_exchange_type('fanout')"))),
    Debt(f"{SQS}:Transport.Channel", TRANSPORT, "feature", None,
         ((f"{VIRTUAL}:Transport.create_channel", "self.Channel("),)),
    Debt(f"{SQS}:Channel._new_queue", CHANNEL, "uses", "self, queue, **kwargs", ()),
    Debt(f"{SQS}:Channel._resolve_queue_url", CHANNEL, "uses", "self, queue", ()),
    Debt(f"{SQS}:Channel._prepare_json_payload", CHANNEL, "uses", "self, text", ()),
    Debt(f"{SQS}:Channel._decode_python_message_body", CHANNEL, "uses", "self, raw_body", ()),
    Debt(f"{SQS}:Channel.canonical_queue_name", CHANNEL, "uses", "self, queue_name", ()),
    Debt(f"{SQS}:Channel._queue_cache", CHANNEL, "uses", None, ()),
    Debt(f"{SQS}:Channel._noack_queues", CHANNEL, "uses", None, (f"{SQS}:Channel.basic_consume",)),
    Debt(f"{SQS}:Channel.basic_consume", CHANNEL, "correctness", "self, queue, no_ack, callback, consumer_tag, *args, **kwargs",
         (("kombu.entity:Queue.consume", "self.channel.basic_consume("),)),
    Debt(f"{VIRTUAL}:QoS._delivered", CHANNEL, "uses", None, (f"{VIRTUAL}:QoS.get", f"{VIRTUAL}:QoS._flush")),
    Debt(f"{VIRTUAL}:QoS._dirty", CHANNEL, "uses", None, (f"{VIRTUAL}:QoS._flush", f"{VIRTUAL}:QoS.can_consume")),
    Debt("kombu.transport.SQS.SNS:SNS._get_or_create_topic", CHANNEL, "uses", "self, exchange_name", ()),
    Debt("kombu.transport.SQS.SNS:SNS.get_client", CHANNEL, "uses", "self, exchange_name", ()),
    # Celery's worker consumer (carcelery.rejecting): every reject says why; what it cannot read is rejected.
    Debt(f"{CONSUMER}.create_task_handler", REJECTING, "correctness", "self, promise",
         ("celery.worker.loops:asynloop", "celery.worker.loops:synloop")),
    Debt(f"{CONSUMER}.on_unknown_message", REJECTING, "correctness", "self, body, message",
         (f"{CONSUMER}.create_task_handler",)),
    Debt(f"{CONSUMER}.on_unknown_task", REJECTING, "correctness", "self, body, message, exc",
         (f"{CONSUMER}.create_task_handler",)),
    Debt(f"{CONSUMER}.on_invalid_task", REJECTING, "correctness", "self, body, message, exc",
         (f"{CONSUMER}.create_task_handler",)),
    Debt(f"{CONSUMER}.on_decode_error", REJECTING, "correctness", "self, message, exc",
         (f"{CONSUMER}.create_task_handler", "celery.worker.consumer.tasks:Tasks.start")),
    Debt(f"{CONSUMER}.strategies", REJECTING, "uses", None, (f"{CONSUMER}.update_strategies",)),
    # Celery's DynamoDB result backend (carcelery.backend).
    Debt(f"{DYNAMO}:DynamoDBBackend._get_client", BACKEND, "correctness", "self, access_key_id, secret_access_key",
         (f"{DYNAMO}:DynamoDBBackend.client",)),
    Debt(f"{DYNAMO}:DynamoDBBackend._apply_chord_incr", BACKEND, "correctness",
         "self, header_result_args, body, **kwargs",
         ((f"{BASE}:BaseKeyValueStoreBackend.__init__", "self.apply_chord = self._apply_chord_incr"),)),
    Debt(f"{DYNAMO}:DynamoDBBackend.implements_incr", BACKEND, "uses", None,
         (f"{BASE}:BaseKeyValueStoreBackend.__init__",)),
    Debt(f"{BASE}:Backend.set_chord_size", BACKEND, "correctness", "self, group_id, chord_size",
         ("celery.canvas:group._apply_tasks",)),
    Debt(f"{BASE}:BaseKeyValueStoreBackend.on_chord_part_return", BACKEND, "correctness",
         "self, request, state, result, **kwargs", (f"{BASE}:Backend.mark_as_done", f"{BASE}:Backend.mark_as_failure")),
    Debt(f"{BASE}:BaseKeyValueStoreBackend._store_result", BACKEND, "correctness",
         "self, task_id, result, state, traceback, request, **kwargs", (f"{BASE}:Backend.store_result",)),
    Debt(f"{DYNAMO}:DynamoDBBackend._prepare_get_request", BACKEND, "uses", "self, key", ()),
    Debt(f"{DYNAMO}:DynamoDBBackend._prepare_put_request", BACKEND, "uses", "self, key, value", ()),
    Debt(f"{DYNAMO}:DynamoDBBackend._key_field", BACKEND, "uses", None, ()),
    Debt(f"{BASE}:Backend._get_result_meta", BACKEND, "uses",
         "self, result, state, traceback, request, format_date, encode", ()),
    # The run's hand-built chord (carcelery.pipeline.sending, which says why not Celery's chord): each part sent
    # with the message options Celery's chord gives it, the chord's size stored before the last part, and each
    # part's group and body read back by the backend from the task's request.
    Debt("celery.app.base:Celery.send_task", SENDING, "uses", "self, name, args, kwargs, countdown, eta, task_id, "
         "producer, connection, router, result_cls, expires, publisher, link, link_error, add_to_parent, group_id, "
         "group_index, retries, chord, reply_to, time_limit, soft_time_limit, root_id, parent_id, route_name, shadow, "
         "chain, task_type, replaced_task_nesting, **options", ("celery.app.task:Task.apply_async",)),
    Debt("celery.app.amqp:AMQP.as_task_v2", SENDING, "uses", "self, task_id, name, args, kwargs, countdown, eta, "
         "group_id, group_index, expires, retries, chord, callbacks, errbacks, reply_to, time_limit, soft_time_limit, "
         "create_sent_event, root_id, parent_id, shadow, chain, now, timezone, origin, ignore_result, argsrepr, "
         "kwargsrepr, stamped_headers, replaced_task_nesting, **options",
         (("celery.app.base:Celery.send_task", "countdown, eta, group_id, group_index,\n            expires, retries, chord"),
          ("celery.app.amqp:AMQP.as_task_v2", "'group': group_id"), ("celery.app.amqp:AMQP.as_task_v2", "'group_index': group_index"),
          ("celery.app.amqp:AMQP.as_task_v2", "'chord': chord"))),
    Debt(f"{BASE}:Backend.set_chord_size", SENDING, "uses", "self, group_id, chord_size", ("celery.canvas:group._apply_tasks",)),
    Debt("celery.app.task:Context.group", BACKEND, "uses", None, (f"{BASE}:BaseKeyValueStoreBackend.on_chord_part_return",)),
    Debt("celery.app.task:Context.chord", BACKEND, "uses", None, (f"{BASE}:Backend.mark_as_done", f"{BASE}:Backend.mark_as_failure")),
    # moto and waitress, in the emulator (carcelery.embedded.emulator).
    Debt(f"{MOTO_SQS}:unix_time_millis", f"{EMULATOR}:_sqs_clock", "speed", "dt", ("moto.sqs.models:Message.visible",)),
    Debt(f"{SQS_BACKEND}.is_message_valid_based_on_retention_period", f"{EMULATOR}:_sqs_retention_check", "speed",
         "self, queue_name, message", (f"{SQS_BACKEND}.receive_message",)),
    Debt("moto.core.serialize:BaseJSONSerializer._serialize_type_structure", f"{EMULATOR}:_dynamodb_values_as_held",
         "speed", "self, serialized, value, shape, key",
         (("moto.core.serialize:ResponseSerializer._serialize", 'f"_serialize_type_{shape.type_name}"'),)),
    Debt("moto.core.serialize:ResponseSerializer._default_serialize", f"{EMULATOR}:_dynamodb_values_as_held", "uses",
         "self, serialized, value, shape, key", ()),
    Debt("moto.core.serialize:ResponseSerializer._base64", f"{EMULATOR}:_dynamodb_values_as_held", "uses",
         "self, value", ()),
    Debt(f"{QUEUE}.messages", f"{EMULATOR}:_queues_scan_from_the_front", "speed", None,
         (f"{SQS_BACKEND}.receive_message", f"{QUEUE}.wait_for_messages")),
    Debt(f"{QUEUE}.delete_message", f"{EMULATOR}:_queues_scan_from_the_front", "speed", "self, receipt_handle",
         (f"{SQS_BACKEND}.delete_message", f"{SQS_BACKEND}.delete_message_batch")),
    Debt(f"{QUEUE}.add_message", f"{EMULATOR}:_queues_scan_from_the_front", "speed", "self, message",
         (f"{SQS_BACKEND}.send_message",)),
    Debt(f"{QUEUE}.approximate_number_of_messages_delayed", f"{EMULATOR}:_queues_scan_from_the_front", "speed", None,
         ((QUEUE, '"ApproximateNumberOfMessagesDelayed"'),)),
    Debt(f"{QUEUE}.approximate_number_of_messages_not_visible", f"{EMULATOR}:_queues_scan_from_the_front", "speed",
         None, ((QUEUE, '"ApproximateNumberOfMessagesNotVisible"'),)),
    Debt(f"{QUEUE}.approximate_number_of_messages", f"{EMULATOR}:_queues_scan_from_the_front", "speed", None,
         ((QUEUE, '"ApproximateNumberOfMessages"'),)),
    Debt(f"{QUEUE}._messages", f"{EMULATOR}:_queues_scan_from_the_front", "uses", None, (f"{QUEUE}.__init__",)),
    Debt(f"{QUEUE}._pending_messages", f"{EMULATOR}:_queues_scan_from_the_front", "uses", None, (f"{QUEUE}.__init__",)),
    Debt(f"{QUEUE}.deleted_messages", f"{EMULATOR}:_queues_scan_from_the_front", "uses", None, (f"{QUEUE}.__init__",)),
    Debt("moto.sqs.models:Message.had_receipt_handle", f"{EMULATOR}:_queues_scan_from_the_front", "uses",
         "self, receipt_handle", ()),
    Debt("moto.dynamodb.models:DynamoDBBackend.transact_write_items", f"{EMULATOR}:_transactions_copy_items", "speed",
         "self, transact_items", ("moto.dynamodb.responses:DynamoHandler.transact_write_items",)),
    Debt("moto.dynamodb.models:copy", f"{EMULATOR}:_transactions_copy_items", "speed", None,
         (("moto.dynamodb.models:DynamoDBBackend.transact_write_items", "copy.deepcopy("),)),
    Debt("moto.dynamodb.models:DynamoDBBackend.get_item", f"{EMULATOR}:_transactions_copy_items", "uses",
         "self, table_name, keys, projection_expressions", ()),
    Debt(f"{DISPATCHER}.get_backend_for_host", f"{EMULATOR}:_backends_cached", "speed", "self, host",
         (f"{DISPATCHER}.get_application",)),
    Debt(f"{DISPATCHER}.__call__", f"{EMULATOR}:_one_request_at_a_time", "correctness",
         "self, environ, start_response",
         (("waitress.task:WSGITask.execute", "server.application(environ, start_response)"),)),
    Debt(f"{QUEUE}.wait_for_messages", f"{EMULATOR}:_one_request_at_a_time", "correctness", "self, timeout",
         (f"{SQS_BACKEND}.receive_message",)),
    Debt(f"{QUEUE}.add_message", f"{EMULATOR}:_sqs_message_move_tasks", "feature", "self, message",
         (f"{SQS_BACKEND}.send_message", f"{SQS_BACKEND}.receive_message")),
    Debt(f"{SQS_RESPONSE}.start_message_move_task", f"{EMULATOR}:_sqs_message_move_tasks", "added", None,
         (("moto.core.responses:BaseResponse.call_action", "getattr(self, action)"),)),
    Debt(f"{SQS_RESPONSE}.list_message_move_tasks", f"{EMULATOR}:_sqs_message_move_tasks", "added", None,
         (("moto.core.responses:BaseResponse.call_action", "getattr(self, action)"),)),
    Debt("moto.core.responses:BaseResponse._get_param", f"{EMULATOR}:_sqs_message_move_tasks", "uses",
         "self, param_name, if_none", ()),
    Debt("moto.s3.notifications:_get_s3_event", f"{EMULATOR}:_s3_event_sequencer", "feature",
         "event_name, bucket, key, notification_id", ("moto.s3.notifications:send_event",)),
    Debt("moto.s3.models:FakeBucket.create_from_cloudformation_json", f"{EMULATOR}:_cloudformation_s3_events",
         "feature", "resource_name, cloudformation_json, account_id, region_name, **kwargs",
         ("moto.cloudformation.parsing:parse_and_create_resource",)),
    Debt("moto.cloudformation.parsing:get_model_list", f"{EMULATOR}:_cloudformation_s3_events", "uses", "",
         (("moto.cloudformation.parsing:get_model_list", "CloudFormationModel.__subclasses__()"),)),
    Debt("waitress.channel:HTTPChannel.send_continue", f"{EMULATOR}:_complete_after_continue", "correctness", "self",
         ("waitress.channel:HTTPChannel.received",)),
    Debt("waitress.server:BaseWSGIServer.channel_class", f"{EMULATOR}:_complete_after_continue", "correctness", None,
         ("waitress.server:BaseWSGIServer.handle_accept",)),
    # Flower's broker classes (carcelery.commands.flower_broker): its Broker page over SQS.
    Debt(f"{FLOWER_BROKER}:Broker.__new__", f"{OURS_FLOWER}:Broker", "feature", "cls, broker_url, *args, **kwargs",
         (("flower.views:BaseHandler.get_broker", "return Broker("),)),
    Debt(f"{FLOWER_BROKER}:BrokerBase.__init__", f"{OURS_FLOWER}:SQS", "feature", "self, broker_url, *_, **__",
         (("flower.views:BaseHandler.get_broker", "broker_options=self.capp.conf.broker_transport_options"),)),
    Debt(f"{FLOWER_BROKER}:BrokerBase.queues", f"{OURS_FLOWER}:SQS", "feature", "self, names",
         (("flower.views.broker:BrokerView.get", "broker.queues("), ("flower.api.tasks:GetQueueLengths.get", "broker.queues("))),
    # A module global replaced, not a class's name: checked by the first two tests only.
    Debt("flower.views:Broker", f"{OURS_FLOWER}:install", "feature", None, ("flower.views:BaseHandler.get_broker",)),
]
# Rows of a class's name that a carcelery class overrides (the others: emulator patches, module globals, uses).
OVERRIDES = [d for d in DEBTS if not d.made.startswith(EMULATOR) and d.why != "uses" and "." in d.library.partition(":")[2]]

def _find(path: str):
    """The object at "module:Qual.name", the library's own where the emulator patched it."""
    module, _, qualname = path.partition(":")
    found = importlib.import_module(module)
    for part in qualname.split("."):
        found = emulator.replaced(found, part) if part in dir(found) else inspect.getattr_static(found, part)
    return found


def _code(thing) -> list[types.CodeType]:
    """Every code object of a function, property or cached property, nested ones included."""
    function = getattr(thing, "fget", None) or getattr(thing, "func", None) or thing
    stack, codes = [function.__code__], []
    while stack:
        code = stack.pop()
        codes.append(code)
        stack.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return codes


def _params(thing) -> str:
    prefix = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}
    return ", ".join(prefix.get(p.kind, "") + p.name for p in inspect.signature(thing).parameters.values())


@pytest.mark.parametrize("debt", DEBTS, ids=str)
def test_the_name_exists_with_the_parameters_written_for(debt):
    if debt.why == "added":
        owner, _, name = debt.library.rpartition(".")
        assert name not in dir(_find(owner)) or (_find(owner), name) in emulator._ADDED, \
            f"{debt}: the library has {debt.library} now: use it, drop the emulator's"
        return
    try:
        thing = _find(debt.library)
    except AttributeError:
        owner, _, name = debt.library.rpartition(".")
        # An instance attribute: one that the library's __init__ sets.
        assert debt.params is None and any(name in c.co_names for c in _code(_find(owner + ".__init__"))), \
            f"{debt}: {debt.library} is gone"
        return
    if debt.params is not None:
        assert _params(thing) == debt.params, \
            f"{debt}: its parameters are now ({_params(thing)}), it was written for ({debt.params})"


@pytest.mark.parametrize("debt", [d for d in DEBTS if d.mentioned_by and d.why != "added"], ids=str)
def test_the_name_is_still_on_the_calling_path(debt):
    name = debt.library.rpartition(".")[2].rpartition(":")[2]
    for caller in debt.mentioned_by:
        caller, text = caller if isinstance(caller, tuple) else (caller, None)
        try:
            code = _find(caller)
        except AttributeError:
            pytest.fail(f"{debt}: {caller}, which called it, is gone")
        if text is None:
            assert any(name in c.co_names for c in _code(code)), f"{debt}: {caller} no longer calls or reads {name}"
        else:
            assert text in inspect.getsource(code), f"{debt}: {caller} no longer does {text}"


@pytest.mark.parametrize("debt", OVERRIDES, ids=str)
def test_carcelery_still_overrides_it(debt):
    ours = _find(debt.made)
    owner, _, name = debt.library.rpartition(".")
    assert issubclass(ours, _find(owner)), f"{debt}: {debt.made} is no longer a {owner}"
    defined_by = next(k for k in ours.__mro__ if name in vars(k))
    # Or an attribute that carcelery's __init__ sets on the instance.
    assert defined_by.__module__.startswith("carcelery") or any(
        name in c.co_names for c in _code(ours.__init__)), f"{debt}: carcelery no longer overrides it: a stale row"


@pytest.mark.parametrize("ours", sorted({d.made for d in DEBTS
                                         if not d.made.startswith(EMULATOR) and inspect.isclass(_find(d.made))}))
def test_every_override_of_a_library_name_is_a_row(ours):
    cls = _find(ours)
    library = next(k for k in cls.__mro__ if not k.__module__.startswith("carcelery"))
    rows = {d.library.rpartition(".")[2] for d in DEBTS if d.made == ours}
    defined = {name for k in cls.__mro__ if k.__module__.startswith("carcelery") for name in vars(k)}
    shared = {n for n in defined & set(dir(library)) if n == "__init__" or not n.startswith("__")}
    # A name defined on both that is not a row is an override nobody checks, or a collision
    # (as a _delete of messages once shadowed kombu's _delete of a queue): a row, or another name.
    assert not shared - rows, (
        f"{ours} and {library.__module__}.{library.__qualname__} both define {sorted(shared - rows)}: "
        f"add a row for each override, rename each collision")


# What the emulator's application and server replace or override, as "module:Qual.name".
_PATCHED_BY_THE_EMULATOR = """
import json, types
from carcelery.embedded import emulator

def library(cls):
    return next(k for k in cls.__mro__ if not k.__module__.startswith("carcelery"))

def overridden(cls):
    base = library(cls)
    return [f"{base.__module__}:{base.__qualname__}.{name}" for k in cls.__mro__
            if k.__module__.startswith("carcelery") for name in vars(k)
            if name in dir(base) and (name[:2] != "__" or name == "__call__")]

app = emulator.application()
running = emulator.server(app, "127.0.0.1", 0)
running.close()
names = [f"{owner.__name__}:{name}" if isinstance(owner, types.ModuleType)
         else f"{owner.__module__}:{owner.__qualname__}.{name}" for owner, name in [*emulator._REPLACED, *emulator._ADDED]]
names += overridden(type(app)) + overridden(running.channel_class)
if running.channel_class is not library(running.channel_class):
    names.append("waitress.server:BaseWSGIServer.channel_class")
print(json.dumps(names))
"""
# Set during each transaction only, by emulator._transactions_copy_items.
_DURING_A_CALL = {"moto.dynamodb.models:copy"}


@pytest.mark.integration  # builds the emulator in a process of its own
def test_every_emulator_patch_is_a_row_and_names_it():
    # In a process of its own: the patches are global, and other tests use moto in this one.
    applied = subprocess.run([sys.executable, "-c", _PATCHED_BY_THE_EMULATOR], capture_output=True, text=True,
                             timeout=120, check=True)
    patched = set(json.loads(applied.stdout)) | _DURING_A_CALL
    rows = {d.library for d in DEBTS if d.made.startswith(EMULATOR) and d.why != "uses"}
    assert patched == rows, (f"emulator patches without a row here: {sorted(patched - rows)}; "
                             f"rows of no patch any more: {sorted(rows - patched)}")
    for debt in DEBTS:
        if debt.made.startswith(EMULATOR) and debt.why != "uses":
            patch = _find(debt.made)
            short = debt.library.rpartition(":")[2].rpartition(".")[2]
            assert short in patch.__doc__ and debt.why.capitalize() in patch.__doc__, \
                f"{debt}: {debt.made}'s docstring should name {short} and say why ({debt.why})"
