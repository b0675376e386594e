"""The one trainer of every project: detectron2's DefaultTrainer, built from the config.

Everything method-specific comes from the config and the dataset metadata:
the common mapper builds the targets the model declares (``d2ext.model_io``),
the evaluator factory picks evaluators, the solver builds SGD/AdamW and the
LR schedule. Differences from detectron2 0.6's DefaultTrainer: checkpoints
are written atomically and carry the optimizer state (0.6 saves only the
iteration and the scheduler; detectron2's current source saves the optimizer
under the same "_trainer" key as here), and data-parallel training also runs
on CPU (gloo); projects contribute hooks for their meta-architecture
(``d2ext.engine.hooks``), placed after the LR scheduler hook; models are built
with d2ext's same-size semantic post-processing (``d2ext.postprocessing``),
baselines and methods alike. With ``D2EXT.RESUMABLE_DATA`` (the default) a
resumed run continues the data stream where the checkpoint left it
(``d2ext.data.resumable_loader``) and each step's randomness is seeded from
(seed, iteration, rank), so a killed and resumed run trains exactly as an
uninterrupted one.
"""
from __future__ import annotations

import logging
import os
import weakref

import torch
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, SimpleTrainer, AMPTrainer, TrainerBase
from detectron2.engine.defaults import create_ddp_model
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from d2ext import postprocessing
from d2ext.data.mapper import CommonDatasetMapper
from d2ext.data.resumable_loader import ResumableTrainLoader
from d2ext.engine.checkpoint import AtomicCheckpointer
from d2ext.engine.consistency import check_config_against_datasets
from d2ext.engine.hooks import build_project_hooks, insert_after_lr_scheduler
from d2ext.engine.solver import build_lr_scheduler, build_optimizer
from d2ext.evaluation import build_evaluator
from d2ext.seeding import Stream, derive_seed, seed_global_rngs

logger = logging.getLogger(__name__)


def _wrap_data_parallel(model: torch.nn.Module) -> torch.nn.Module:
    if comm.get_world_size() == 1:
        return model
    on_cuda = next(model.parameters()).is_cuda
    # CPU modules take device_ids=None; detectron2 0.6 would pass the local rank.
    device_ids = [comm.get_local_rank()] if on_cuda else None
    return create_ddp_model(model, broadcast_buffers=False, device_ids=device_ids)


class Trainer(DefaultTrainer):
    def __init__(self, cfg):
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = _wrap_data_parallel(model)
        trainer_type = AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer
        self._trainer = trainer_type(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = AtomicCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def _resumable_loader(self):
        loader = self._trainer.data_loader
        return loader if isinstance(loader, ResumableTrainLoader) else None

    def run_step(self):
        loader = self._resumable_loader()
        if loader is not None:
            # The model's randomness (RPN/ROI sampling, point sampling, ...) of step i depends
            # on (seed, i, rank) alone, not on what the steps, hooks (an evaluation's DataLoader
            # draws from torch's generator) or a resume before it drew. Augmentations are
            # seeded per sample by the loader, which leaves these generators untouched.
            seed_global_rngs(derive_seed(loader.seed, Stream.TRAINING_STEP, self.iter, comm.get_rank()))
        super().run_step()

    @classmethod
    def build_model(cls, cfg):
        check_config_against_datasets(cfg)  # class counts, ignore labels: fail before building
        postprocessing.install()
        return super().build_model(cfg)

    def build_hooks(self):
        return insert_after_lr_scheduler(super().build_hooks(), build_project_hooks(self.cfg, self))

    def state_dict(self):
        """detectron2's (iteration, hooks) + "_trainer" (optimizer, AMP grad scaler)
        + "data_loader" (the resumable loader's position and seed, every rank's)."""
        state = super().state_dict()
        state["_trainer"] = self._trainer.state_dict()
        loader = self._resumable_loader()
        if loader is not None:
            state["data_loader"] = loader.state_dict()
        return state

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._trainer.load_state_dict(state_dict["_trainer"])
        loader = self._resumable_loader()
        if loader is None:
            logger.warning("D2EXT.RESUMABLE_DATA is off: the data order restarts from its beginning (as in detectron2)")
        elif "data_loader" not in state_dict:
            logger.warning(
                "The checkpoint has no data loader state (saved without D2EXT.RESUMABLE_DATA or by an older "
                "d2ext): the data order restarts from its beginning, so this run will not train as an "
                "uninterrupted one"
            )
        else:
            loader.load_state_dict(state_dict["data_loader"])

    @classmethod
    def build_train_loader(cls, cfg):
        mapper = CommonDatasetMapper(cfg, is_train=True)
        if cfg.D2EXT.RESUMABLE_DATA:
            return ResumableTrainLoader(cfg, mapper=mapper)
        return build_detection_train_loader(cfg, mapper=mapper)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name: str):
        return build_detection_test_loader(cfg, dataset_name, mapper=CommonDatasetMapper(cfg, is_train=False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name: str, output_folder: str = None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer):
        return build_lr_scheduler(cfg, optimizer)
