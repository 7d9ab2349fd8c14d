"""How slow work reports progress: the one definition the builder and the server share."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[float, float, str], None]
"""``progress(done, total, message)``: called from the thread doing the work; each phase (a scan,
then the build) counts from 0 to its own total."""
