"""Comparison of taskbus with its peers (Celery, RQ, Dramatiq, arq, SAQ, taskiq,
huey) on one machine in one run. See README.md beside this file."""
