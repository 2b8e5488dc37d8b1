"""Telling the application of the messages the broker discarded (QUEUE-6).

The native subscription reports each gap once, in line with the messages:
in the ``dropped_before`` of the message after it, or on its own when no
message follows yet. :class:`DropReports` turns those reports into
``on_drop(count)`` calls, one per gap, in order, each as the consumer
reaches its gap. Nothing here runs while no message is discarded: a
subscription asks :attr:`DropReports.pending` and takes its fast path.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, List, Optional, Union

from . import _native
from ._native import Message

OnDrop = Callable[[int], None]
"""Called with how many messages the broker discarded in one gap."""

logger = logging.getLogger("blipmq")


def warn_of_drops(pattern: str) -> OnDrop:
    """The ``on_drop`` of a subscription made without one: a warning on the
    ``blipmq`` logger, so that no discard goes unnoticed."""

    def on_drop(count: int) -> None:
        logger.warning(
            "the broker discarded %d message(s) for subscription %r "
            "(a full queue, an expired TTL or its memory budget)",
            count,
            pattern,
        )

    return on_drop


class DropReports:
    """What receives took from a native subscription but have not handed to
    the application yet, in order: messages, and gaps (``int`` counts) each
    before the message after it. Usually empty; what stays:

    - a gap after the last message handed over, until the consumer asks for
      more (it has reached the gap then): ``on_drop`` never hears of a gap
      before the message that came before it has been returned;
    - messages a receive took but did not return because ``on_drop``
      raised: the next receive returns them without telling their gaps
      again;
    - what a receive took while another's gap or messages waited here
      (receives that overlap): it goes behind them.
    """

    __slots__ = ("on_drop", "pending", "_queue")

    def __init__(self, on_drop: OnDrop) -> None:
        self.on_drop = on_drop
        #: Whether anything waits in the queue; read on every receive.
        self.pending = False
        # No two gaps are neighbours: discards with no message between them
        # are one gap, even when two native reports carried it.
        self._queue: List[Union[Message, int]] = []

    def take(self, messages: List[Message], dropped_within: int, dropped_after: int) -> None:
        """Queue what the native ``next_batch`` returned."""
        queue = self._queue
        if dropped_within:
            for message in messages:
                if message.dropped_before:
                    self._gap(message.dropped_before)
                queue.append(message)
        else:
            queue.extend(messages)
        if dropped_after:
            self._gap(dropped_after)
        self.pending = bool(queue)

    def _gap(self, count: int) -> None:
        queue = self._queue
        if queue and isinstance(queue[-1], int):
            queue[-1] += count
        else:
            queue.append(count)

    async def receive(
        self, native: _native.Subscription, max_messages: int, deadline: Optional[float]
    ) -> List[Message]:
        """``Subscription.next_batch`` when something is pending or a batch
        came with gaps: hand over what is queued, telling its gaps; when
        nothing is queued, tell the gap the consumer has reached and wait on
        until ``deadline`` (a report of discards is no timeout)."""
        while True:
            handed = self._hand_over(max_messages)
            if handed or max_messages == 0:
                return handed
            timeout = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            messages, dropped_within, dropped_after = await native.next_batch(max_messages, timeout)
            if not (messages or dropped_after or self.pending):
                return messages  # the time passed
            self.take(messages, dropped_within, dropped_after)

    def _hand_over(self, max_messages: int) -> List[Message]:
        """Up to ``max_messages`` queued messages, each gap before them told
        first. A gap with no message after it is told only when no message
        is handed over with it."""
        queue = self._queue
        handed: List[Message] = []
        taken = 0
        try:
            while taken < len(queue) and len(handed) < max_messages:
                entry = queue[taken]
                if isinstance(entry, int):
                    if handed and taken + 1 == len(queue):
                        break  # the consumer has not reached it yet
                    taken += 1  # told once, even if on_drop raises
                    self.on_drop(entry)
                else:
                    handed.append(entry)
                    taken += 1
        except BaseException:
            # The gaps told so far leave the queue; the messages stay for
            # the next receive.
            queue[:taken] = handed
            self.pending = bool(queue)
            raise
        del queue[:taken]
        self.pending = bool(queue)
        return handed
