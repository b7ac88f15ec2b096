"""What the live client shows: a rich panel in a terminal, plain lines elsewhere.

Both views take the same :class:`ViewState` snapshot several times a second.
``RichView`` redraws one panel (state, connection, mic level, both transcripts of
the last turns, each turn's latency, underruns and barge-ins); ``PlainView``
prints each new log line and every change of state, for pipes, logs and tests.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from voxloop.client.conversation import Turn


@dataclass
class ViewState:
    connection: str
    state: str
    mic_dbfs: float
    echo: str
    underruns: int
    barge_ins: int
    turns: list[Turn] = field(default_factory=list)
    log: list[str] = field(default_factory=list)


class PlainView:
    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stdout
        self._printed, self._last = 0, ("", "")

    def __enter__(self) -> PlainView:
        return self

    def __exit__(self, *exc) -> None:
        self.stream.flush()

    def update(self, view: ViewState) -> None:
        for line in view.log[self._printed:]:
            print(line, file=self.stream)
        self._printed = len(view.log)
        if (view.connection, view.state) != self._last:
            self._last = (view.connection, view.state)
            print(f"state {view.state} ({view.connection})", file=self.stream)
        self.stream.flush()


class RichView:
    def __init__(self, max_turns: int = 4, max_log_lines: int = 6) -> None:
        from rich.console import Console
        from rich.live import Live

        self.max_turns, self.max_log_lines = max_turns, max_log_lines
        self._live = Live(console=Console(), auto_refresh=False, transient=False)

    def __enter__(self) -> RichView:
        self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._live.__exit__(*exc)

    def update(self, view: ViewState) -> None:
        self._live.update(self._render(view), refresh=True)

    def _render(self, view: ViewState):
        from rich.console import Group
        from rich.panel import Panel
        from rich.table import Table
        from rich.text import Text

        colors = {"listening": "green", "user speaking": "bold cyan",
                  "thinking": "yellow", "assistant speaking": "bold magenta"}
        meter = "#" * max(0, min(20, int((view.mic_dbfs + 60) / 3)))
        head = Text.assemble((f" {view.state:^18} ", colors.get(view.state, "white")),
                             f"  {view.connection}\n mic {view.mic_dbfs:4.0f} dBFS ",
                             (f"{meter:<20}", "cyan"),
                             f"  echo {view.echo}  underruns {view.underruns}"
                             f"  barge-ins {view.barge_ins}")
        table = Table(expand=True, box=None, show_edge=False)
        table.add_column("you", ratio=2)
        table.add_column("assistant", ratio=3)
        table.add_column("latency", justify="right", width=9)
        for turn in view.turns[-self.max_turns:]:
            latency = "" if turn.latency_ms is None else f"{turn.latency_ms:.0f} ms"
            answer = Text(turn.answer_transcript)  # Text: brackets are not rich markup
            if turn.truncated_ms is not None:
                answer.append(f"  (cut at {turn.truncated_ms} ms)", "dim")
            table.add_row(Text(turn.user_transcript), answer, latency)
        log = Text("\n".join(view.log[-self.max_log_lines:]), style="dim")
        return Panel(Group(head, table, log), title="voxloop",
                     subtitle="Ctrl-C to quit")


def make_view(kind: str):
    """``rich`` in a terminal, ``plain`` otherwise (``auto``)."""
    if kind == "auto":
        kind = "rich" if sys.stdout.isatty() else "plain"
    return RichView() if kind == "rich" else PlainView()
