"""Worker plugins the runtime installs on the workers it starts (imports ``distributed``)."""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin


class ThreadCap(WorkerPlugin):
    """Size OpenCV's and torch's thread pools to the worker's thread count at start-up.

    See :func:`inscene.runtime.cap_library_threads`. Registered once per client; Dask also runs
    it on workers that join later (SLURM jobs, restarts).
    """

    name = "inscene-thread-cap"

    def setup(self, worker: Any) -> None:
        from inscene.runtime import cap_library_threads

        cap_library_threads(worker.state.nthreads)
