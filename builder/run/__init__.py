"""Running the stages: the build runner, the live models the server uses, and Ray.

- ``runner``: the one build runner (store lock, what is stored already, windows and scans, every
  finished batch appended), for the command line and the server.
- ``live``: models loaded once, one lock: the live-model layer the MCP server calls.
- ``distributed``: the same build spread over Ray workers, one shard each, merged into the store.
- ``distributed_scan``: the scan spread over spans of windows.
- ``cluster``: their Ray plumbing (configuration, workers, units handed out).
"""
