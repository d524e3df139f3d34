"""The event bus on top of the task engine: the envelope, pattern and filter
matching, the subscription registry, routing, publishing, schemas and their
validators, payload encoding, and the task declarations producers resolve by
name (docs/routing.md).
"""
