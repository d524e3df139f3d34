"""The reliability harness: real processes, injected faults, a history, a checker.

In the style of Jepsen's total-queue checker. A scenario (``scenario.py``)
starts a private Redis, three apps' workers and publisher processes; a nemesis
(``nemesis.py``) kills, pauses and disconnects them at seeded random moments;
every publish attempt and every handler invocation is appended to a history
(``history.py``), which the checker classifies per app into lost, recovered,
unexpected and duplicated deliveries. The suite runs short scenarios
(``tests/test_chaos.py``); ``bench/chaos.py`` runs long ones for
``docs/reliability.md``.
"""
