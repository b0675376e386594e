"""Tiny random models of the shipped toy configs, and eager references, for the export tests."""
import os
from typing import Dict, Sequence

import pytest
import torch
from detectron2.layers import FrozenBatchNorm2d
from torch import nn

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

# Smaller heads than the toy configs' (same architecture), on the CPU.
TINY_OPTS = [
    "MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu",
    "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32",
]


def build_tiny(config: str, opts: Sequence[str] = ()) -> nn.Module:
    """The config's model (random weights, non-trivial batch-norm statistics), eval mode."""
    import d2ext_projects  # noqa: F401  (registration)
    from d2ext.engine import Trainer, load_cfg

    cfg = load_cfg(os.path.join(REPO_ROOT, config), TINY_OPTS + list(opts))
    torch.manual_seed(0)
    model = Trainer.build_model(cfg)
    g = torch.Generator().manual_seed(1)
    for m in model.modules():  # folding then has work to do
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d)):
            c = m.running_mean.numel()
            m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
        # Classifiers start near-uniform (ICNet, PointRend): He-initialized instead,
        # so that random models' label maps have several classes to agree on.
        if isinstance(m, nn.Conv2d) and m.out_channels == cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES:
            with torch.no_grad():
                m.weight.normal_(0.0, (2.0 / m.weight[0].numel()) ** 0.5, generator=g)
    return model.eval()


def random_image(h: int, w: int, seed: int) -> torch.Tensor:
    """(3, h, w) float32 raw pixels in [0, 255]."""
    return torch.randint(0, 256, (3, h, w), generator=torch.Generator().manual_seed(seed)).float()


def eager_sem_seg(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """The model's own inference (no export code): (1, K, H, W)."""
    with torch.no_grad():
        return model([{"image": image}])[0]["sem_seg"][None]


def onnx_op_types(path: str) -> Dict[str, int]:
    """op type -> count, subgraphs (If / Loop bodies) included."""
    import onnx

    counts: Dict[str, int] = {}

    def walk(graph) -> None:
        for node in graph.node:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
            for attr in node.attribute:
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    walk(sub)

    walk(onnx.load(path).graph)
    return counts


@pytest.fixture(autouse=True)
def _one_thread():
    """1 thread, as the tests' timing budget assumes (the machine is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
