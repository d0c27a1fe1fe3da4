"""``python -m rli2it`` (and ``torchrun -m rli2it``): the ``rli2it`` command line.

The code lives in :mod:`rli2it_med` (registration, the agent core) and :mod:`rli2it_vision` (vision tasks).
"""
