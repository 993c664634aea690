"""What each decode step committed per request, read on the host with no device sync.

A request's commit shows up as the growth of its ``output_ids`` between two looks.  Under the
overlap scheduler it shows up a step late, so a value recorded for each step (the verify width it
used, the commit its draw should give) waits in a queue until its step's growth is seen.
"""

from __future__ import annotations

from typing import Any, Optional


class StepCommits:
    def __init__(self) -> None:
        self.state: dict = {}  # rid -> [output length last seen, values of steps not seen yet (oldest first)]

    def take(self, req) -> Optional[tuple[int, Any]]:
        """(tokens committed, its step's value) when one more step's commit became visible."""
        done = len(req.output_ids)
        st = self.state.setdefault(req.rid, [done, []])
        seen = (done - st[0], st[1].pop(0)) if done > st[0] and st[1] else None
        st[0] = done
        return seen

    def push(self, req, value: Any) -> None:
        """Records the value of the step now being launched for ``req`` (after ``take``)."""
        self.state[req.rid][1].append(value)

    def forget_finished(self, reqs) -> None:
        live = {r.rid for r in reqs}
        self.state = {k: v for k, v in self.state.items() if k in live}
