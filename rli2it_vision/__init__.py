"""rli2it_vision: the RL-I2IT agent core applied to vision tasks.

The tasks (DigitsTransform, inpainting, translation, style transfer) arrive with their own issues; each one reuses
:mod:`rli2it_med.agent` and supplies only an environment, networks and losses.
"""
