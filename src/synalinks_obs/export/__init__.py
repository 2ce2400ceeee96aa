"""Finished records -> span batches, off the calling thread.

``exporter`` (queue and thread), ``wire`` (a record as a plain ``Wire``), ``payloads``
(JSON, redaction, truncation), ``sinks`` (the exporter process or a local writer) and
``service`` (one exporter per process: exit flush, fork safety).
"""
