"""Task-agnostic RL-I2IT agent: planner, actor, twin critic, soft actor-critic with an auxiliary loss."""

from rli2it_med.agent.buffer import EpisodeReplayBuffer, ReplayBatch
from rli2it_med.agent.checkpoint import load_checkpoint, save_checkpoint
from rli2it_med.agent.logger import Logger
from rli2it_med.agent.networks import Actor, Agent, AgentConfig, Planner, PlannerOutput, TwinCritic, count_parameters
from rli2it_med.agent.sac import SAC, AuxiliaryTask, SACConfig, polyak_update

__all__ = [
    "Actor",
    "Agent",
    "AgentConfig",
    "AuxiliaryTask",
    "EpisodeReplayBuffer",
    "Logger",
    "Planner",
    "PlannerOutput",
    "ReplayBatch",
    "SAC",
    "SACConfig",
    "TwinCritic",
    "count_parameters",
    "load_checkpoint",
    "polyak_update",
    "save_checkpoint",
]
