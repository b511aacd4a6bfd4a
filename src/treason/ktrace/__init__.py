"""The kernel's own view of every local TCP socket, from the ``tcp`` tracepoints.

``tcp:tcp_probe`` fires for every segment an established socket receives, with the socket's
``snd_una``, ``snd_nxt`` and accepted, already scaled ``snd_wnd``; ``tcp:tcp_cong_state_set``
(entering Loss) and ``tcp:tcp_retransmit_skb`` show the retransmission timer sending the
zero-window probe, where the kernel used to log "unexpectedly shrunk window". Reading them from
a private tracefs instance gives the same events ``scan`` and ``live`` find in packets, for
every socket on the host, without a copy of every packet.

- ``tracefs``: finding or mounting tracefs, the private instance and its teardown;
- ``formats``: the event and ring-buffer page layouts the kernel describes;
- ``ringbuf``: records out of the binary per-CPU buffer pages;
- ``sockets``: per-socket right edges and stalls, turned into ``treason.events.Event``;
- ``engine``: pages to events, in Python (the reference) or in C (``treason._ktrace``);
- ``session``: the reading loop that ties them together; ``report``: its status and summary.
"""

from treason.ktrace.session import PortFilter, TraceCounters, TraceSession
from treason.ktrace.sockets import SocketTable

__all__ = ["PortFilter", "SocketTable", "TraceCounters", "TraceSession"]
