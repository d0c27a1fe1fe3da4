"""rli2it_med: RL-I2IT agent core and step-wise deformable registration for medical images."""

import atexit
import gc

__version__ = "0.1.0"


def skip_exit_sweep() -> None:
    """Let this process exit without the interpreter's last garbage-collection sweeps.

    At exit every object still alive is frozen (``gc.freeze``), so finalisation does not traverse the heap again and
    again: with torch and MONAI loaded those sweeps take ~1.5 s on 2 CPU cores, after the work is done. The operating
    system reclaims the memory anyway, and what Python promises at exit still happens: the other atexit handlers
    (logging's flush) run, and so does every ``close`` and ``with`` of the code. The command line and the bundles'
    workflows call it; calling it again changes nothing."""
    atexit.unregister(gc.freeze)  # registered once, however often called
    atexit.register(gc.freeze)
