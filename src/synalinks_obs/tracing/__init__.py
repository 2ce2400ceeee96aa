"""The calling thread's half of tracing: a module call -> an entered ``CallRecord``.

``records`` (ids, attributes, cost), ``context`` (which call is current), ``capture``
(payloads by reference), ``span_types``, ``routing`` (Monitor hooks) and ``tracer``
(destinations, sampling, hand-over to the exporter).
"""
