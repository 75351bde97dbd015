"""carcelery: find cars in S3 images and read their text, on Celery over SQS.

``celery -A carcelery worker`` finds the application here.
"""

from .app import app

__all__ = ["app"]
