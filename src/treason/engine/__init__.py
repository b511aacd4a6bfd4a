"""The engines: decoder + flow table + counters, behind one protocol (``protocol.Engine``).

``reference`` is the readable model in Python, ``compiled`` the same rules in C; ``choose``
picks one. ``stats`` holds what they count. See ``docs/architecture.md``.
"""
