"""The other SQS consumers the comparison runs (``benchmarks/compare.py``), each in its own runtime:
``celery_app.py`` in the Celery venv (``.cache/compare/celery``), ``sqs_consumer.mjs`` under
Node (``.cache/compare/node``). Neither imports the project; each records what it handled the
way ``benchmarks/handlers.py`` does (``$BENCH_RECORD``: ``seen`` and ``first``)."""
