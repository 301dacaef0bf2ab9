"""The cyclic garbage collector, paused while the `pyvmm` program starts up.

Start-up (the imports, the parser, the machine's build) allocates objects by
the hundred thousand and makes almost no garbage in cycles, yet the collector
walks them every 700 allocations: 17 collections, about 1.9 ms (timed by
gc.callbacks) of a 33 ms `pyvmm boot guests/hello.bin` here; 4 are left, run
before the program's first line (importing pyvmm.cli).
So the program pauses collection first thing (`pause_collection`), and the
guest's run resumes it (`resume_collection`, from Machine.run; `pyvmm demo`
and `pyvmm host`, whose work runs outside Machine.run, resume it first), after
`gc.freeze()` has moved everything start-up made into the permanent
generation, which no later collection walks: the use the gc module's
documentation gives for freeze. A program that never paused (the library's
callers) sees no change: resuming is then nothing.
"""

from __future__ import annotations

import gc

_paused = False


def pause_collection() -> None:
    """Turn the collector off until `resume_collection`, if it is on (the program's start)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume_collection() -> None:
    """Freeze what exists and turn the collector back on, if `pause_collection` turned it
    off; otherwise nothing. Idempotent."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
