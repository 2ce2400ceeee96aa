"""A batch of spans the ``Writer`` holds for one destination, and how one is split.

A ``Chunk`` is what the app (or a spool file) handed over as one batch: its destination,
its span count, the spans (a list of ``Wire`` tuples, or their pickle until written),
its attempts, the sender's id (reported once the batch is done with, so the app stops
keeping it), whether it went to the OTLP endpoint, and the spool file it came from.
``split_chunk`` cuts a chunk that exceeds one write; the sender's batch is done when
both parts are.
"""

from __future__ import annotations

import pickle


class Chunk:
    __slots__ = ("destination", "count", "payload", "attempts", "tag", "forwarded", "claim", "group")

    def __init__(self, destination, count, payload, tag=None, claim=None):
        self.destination = destination
        self.count = count
        self.payload = payload  # list of span tuples, or their pickle
        self.attempts = 0
        self.tag = tag  # the sender's id of this batch (see ``finished_tags``)
        self.forwarded = False  # sent to the OTLP endpoint (store.otlp), once
        self.claim = claim  # the spool file it came from (store.spool.Claim), if any
        self.group = None  # [parts left, tag] when the batch was split (``Writer._split``)

    def settled(self):
        """Written, dropped or spooled again: its spool file may go once all its batches
        are. Returns the sender's tag to report (once every part of its batch is done)."""
        if self.claim is not None:
            self.claim.batch_done()
            self.claim = None
        group, self.group = self.group, None
        if group is not None:
            group[0] -= 1
            return group[1] if group[0] == 0 else None
        tag, self.tag = self.tag, None
        return tag

    def wires(self):
        payload = self.payload
        return pickle.loads(payload) if isinstance(payload, bytes) else payload


def split_chunk(chunks, chunk, count: int):
    """The first ``count`` spans of ``chunk``; the rest goes back to the front of ``chunks``."""
    wires = chunk.wires()
    head = Chunk(chunk.destination, count, wires[:count], claim=chunk.claim)
    rest = Chunk(chunk.destination, len(wires) - count, wires[count:], claim=chunk.claim)
    if chunk.claim is not None:
        chunk.claim.open_batches += 1  # one batch of its file is now two
    group = chunk.group
    if group is None and chunk.tag is not None:
        group = [1, chunk.tag]
    if group is not None:  # the sender's batch is done when both parts are
        group[0] += 1
        head.group = rest.group = group
    rest.attempts = head.attempts = chunk.attempts
    rest.forwarded = head.forwarded = chunk.forwarded  # (OTLP: sent once, as a whole)
    chunks.appendleft(rest)
    return head
