"""Operator commands (``python -m carcelery.commands.<name>``): queue depths,
Flower, the dead-letter queue, one image through a recognizer, and the
accuracy evaluation on labeled photos."""
