"""rli2it_med: RL-I2IT agent core and step-wise deformable registration for medical images."""

__version__ = "0.1.0"
