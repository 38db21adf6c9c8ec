"""Training, evaluation and fine-tuning with the paper's recipe (`train(TrainConfig(...)) -> TrainResult`)."""

from effnet.train.config import ConfigError, Plan, TrainConfig, check_config, recipe_lines
from effnet.train.ema import ModelEma
from effnet.train.evaluate import EvalMetrics, evaluate, evaluate_checkpoint
from effnet.train.loop import Trainer, TrainingDiverged, TrainResult, train
from effnet.train.optim import RMSpropTF, param_groups
from effnet.train.plan import make_plan, open_data, plan_run
from effnet.train.schedule import LRSchedule, make_schedule, scaled_lr

__all__ = [
    "ConfigError", "EvalMetrics", "LRSchedule", "ModelEma", "Plan", "RMSpropTF", "TrainConfig", "TrainResult",
    "Trainer", "TrainingDiverged", "check_config", "evaluate", "evaluate_checkpoint", "make_plan", "make_schedule",
    "open_data", "param_groups", "plan_run", "recipe_lines", "scaled_lr", "train",
]
