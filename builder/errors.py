"""Errors the builder raises for the user to act on; their messages say what to do next."""

from __future__ import annotations


class N2GError(Exception):
    """Base class: a problem with the request, not a bug. The message is meant for the user."""


class UnknownModel(N2GError):
    """A model name or path that cannot be loaded here."""


class BadRequest(N2GError):
    """Arguments out of range or inconsistent (layer, neuron, hook point, corpus)."""


class Cancelled(N2GError):
    """Work stopped because the caller asked; finished batches are kept."""


class Busy(N2GError):
    """Another process holds what the work needs (a store being written); try again later."""
