"""The base of the Channel's mixins: ``object`` at run time; for the type checker, kombu's SQS
Channel, which they are mixed into and whose attributes (``sqs``, ``hub``, ``canonical_queue_name``,
...) they use."""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kombu.transport import SQS

    Mixin = SQS.Channel
else:
    Mixin = object
