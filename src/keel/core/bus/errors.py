"""Errors both bus adapters raise, so callers handle one type whichever broker runs underneath."""

from __future__ import annotations


class BusError(Exception):
    """Base class of every error the bus adapters raise on purpose."""


class CommitFailed(BusError):
    """The group moved on: this consumer no longer owns a partition it tried to commit.

    The records it read from that partition will be delivered again to the partition's new owner,
    so the caller drops its in-flight work for it rather than retrying the commit."""


class PublishFailed(BusError):
    """The broker did not acknowledge every record of a send; the cause is chained."""


class NotAssigned(BusError):
    """A partition-level operation (seek) named a partition this consumer does not own."""


class ConsumerStopped(BusError):
    """The consumer was stopped (or never started) when it was asked for records."""


class BrokerUnavailable(BusError):
    """The broker did not answer in time (start-up, ping, topic creation)."""
