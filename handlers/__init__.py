"""Handler modules: business code only, never SQS calls.

Each module exposes ``router = Router()`` and registers one function per message type;
``config/*.yaml`` lists, per queue, which modules serve it. Copy ``billing.py`` to start.
"""
