"""The errors of n2g-mcp, one family for the builder, the store and the server.

Every error here is a problem with the request or the data, not a bug, and its message is written
for whoever reads it (a researcher at the command line, an agent through MCP): it says what went
wrong and what to do next. The builder and the store raise them; ``n2g_mcp.server`` turns any
:class:`N2GError` into an MCP tool error in one place, and the ``n2g`` command prints it and exits
with status 2. Torch-free, so every layer can import it.

    N2GError
    ├── BadArgument (ValueError)      an argument out of range, malformed or inconsistent
    │   └── OutOfRange                a layer or neuron the model does not have
    ├── NotFound (LookupError)        a model, store, graph or scan that is not here
    ├── Unavailable                   work this installation or model cannot do now
    │   ├── UnknownModel              a model name or path that cannot be loaded here
    │   └── Busy                      another process holds the store being written
    ├── Cancelled                     the caller asked to stop; finished work is kept
    └── StoreError                    a store or scan file that cannot be used as asked
        ├── StoreFormatError (ValueError)  not a store this code reads
        ├── StoreMismatch             a store of another model or shape than the one at hand
        ├── CorruptGraph              a stored line that indexed but does not validate
        ├── ScanFileError (ValueError)     a scan file that cannot be read
        └── DictionaryError (ValueError)   a dictionary (SAE, transcoder) file of the wrong format or shape
"""

from __future__ import annotations


class N2GError(Exception):
    """Base class: a problem with the request or the data; the message is meant for the user."""


class BadArgument(N2GError, ValueError):
    """An argument out of range, malformed, or inconsistent with another."""


class OutOfRange(BadArgument):
    """A layer or neuron index the model does not have."""


class NotFound(N2GError, LookupError):
    """A model, store, graph or scan file that is not here."""


class Unavailable(N2GError):
    """Work this installation or this model cannot do (no builder extra, a model that fails to load)."""


class UnknownModel(Unavailable):
    """A model name or path that cannot be loaded here."""


class Busy(Unavailable):
    """Another process holds what the work needs (a store being written); try again later."""


class Cancelled(N2GError):
    """Work stopped because the caller asked; finished batches are kept."""


class StoreError(N2GError):
    """A store (or scan file) that cannot be used as asked."""


class StoreFormatError(StoreError, ValueError):
    """A file that is not a store this code can read."""


class StoreMismatch(StoreError):
    """A store that holds another model, or a model of another shape, than the one at hand."""


class CorruptGraph(StoreError):
    """A stored line that indexed but does not validate as a whole graph."""


class ScanFileError(StoreError, ValueError):
    """A scan file that cannot be read (missing, damaged, another format or a newer version)."""


class DictionaryError(StoreError, ValueError):
    """A dictionary (SAE or transcoder) file that cannot be read: missing, of another format, or
    of a shape that does not fit the model; the message names the file and what is wrong."""
