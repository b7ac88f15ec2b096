"""A session's conversation: its items in order, bounded, and the events that say so.

The session decides what happens (a turn committed, an answer begun, a client's
``conversation.item.*`` event); this keeps the items and puts the matching
``conversation.item.*`` server events into the session's outbox.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from voxloop.audio import pcm16_to_float
from voxloop.realtime.outbox import Outbox
from voxloop.realtime.wire import events
from voxloop.realtime.wire.ids import new_id
from voxloop.realtime.wire.items import Item, item_from_client
from voxloop.realtime.wire.protocol import ProtocolError


class Conversation:
    def __init__(self, outbox: Outbox, max_items: int, beta: bool) -> None:
        self.outbox, self.max_items, self.beta = outbox, max_items, beta
        self.items: OrderedDict[str, Item] = OrderedDict()  # oldest first

    @property
    def last_id(self) -> str | None:
        return next(reversed(self.items), None)

    def get(self, item_id: str, event_id) -> Item:
        if item_id not in self.items:
            raise ProtocolError("item_not_found", f"no item with id {item_id!r}", event_id,
                                "item_id")
        return self.items[item_id]

    def last_user(self, event_id) -> Item:
        """The user message a response answers: the last in the conversation's order."""
        user = next((i for i in reversed(self.items.values()) if i.role == "user"), None)
        if user is None:
            raise ProtocolError("invalid_value", "there is no user message to answer: append and "
                                "commit audio, or create a user item first", event_id)
        return user

    def add(self, item: Item, after: str | None = None, first: bool = False) -> Item:
        """Keep ``item`` last, or right after the item ``after``, or ``first``; the oldest
        are forgotten past ``max_items``."""
        ids = list(self.items)
        if first:
            later = ids
        elif after is not None:
            later = ids[ids.index(after) + 1:]
        else:
            later = []
        self.items[item.id] = item
        for item_id in later:  # in place: the session reads this same dict
            self.items.move_to_end(item_id)
        while len(self.items) > self.max_items:  # the oldest but the one just placed
            del self.items[next(k for k in self.items if k != item.id)]
        return item

    def announce(self, item: Item, previous: str | None) -> None:
        wire = item.wire(self.beta)
        self.outbox.put(events.conversation_item_added(wire, previous))
        self.outbox.put(events.conversation_item_done(wire, previous))  # beta clients: dropped

    def create(self, event: dict, event_id) -> Item:
        """A client's ``conversation.item.create``: the item, kept and announced."""
        item = item_from_client(event["item"], event["item"].get("id") or new_id("item"),
                                event_id)
        if item.id in self.items:
            raise ProtocolError("invalid_value", f"an item with id {item.id!r} already exists",
                                event_id, "item.id")
        previous = event.get("previous_item_id")
        if previous == "root":  # the API's name for "before every item"
            self.announce(self.add(item, first=True), None)
            return item
        if previous is not None and previous not in self.items:
            raise ProtocolError("item_not_found", f"previous_item_id {previous!r} does not exist",
                                event_id, "previous_item_id")
        previous = previous or self.last_id
        self.announce(self.add(item, after=previous), previous)
        return item

    def truncate(self, event: dict, event_id) -> Item:
        """A client's ``conversation.item.truncate``: the item, cut and announced."""
        item = self.get(event["item_id"], event_id)
        if event["content_index"] != 0:
            raise ProtocolError("invalid_value", "content_index must be 0: items here have one "
                                "content part", event_id, "content_index")
        item.truncate(event["audio_end_ms"], event_id)
        self.outbox.put(events.conversation_item_truncated(item.id, event["audio_end_ms"]))
        return item

    def retrieve(self, item_id: str, event_id) -> None:
        self.outbox.put(events.conversation_item_retrieved(self.get(item_id, event_id).wire(
            self.beta, with_audio=True)))

    def delete(self, item: Item, active: Item | None, event_id=None) -> None:
        """Forget ``item``; ``active``: the item of the response being written (not deleted)."""
        if item is active:
            raise ProtocolError("invalid_value", "cannot delete the item of the active response; "
                                "cancel it first", event_id, "item_id")
        del self.items[item.id]
        self.outbox.put(events.conversation_item_deleted(item.id))

    def retract(self, user: Item, active: Item | None) -> None:
        """``user``'s turn went on after it was committed: it and the answers begun to it
        (the assistant items right after it, but ``active``) leave the conversation."""
        if user.id not in self.items:
            return  # the client deleted it already
        ids = list(self.items)
        for item_id in ids[ids.index(user.id):]:
            item = self.items[item_id]
            if item is not user and (item.role != "assistant" or item is active):
                return
            self.delete(item, active)


def item_audio_24k(item: Item) -> np.ndarray | None:
    """An item's pcm16 as float32 ``[T]`` at 24 kHz (once per turn), or None for text."""
    return pcm16_to_float(bytes(item.audio)) if item.audio is not None else None
