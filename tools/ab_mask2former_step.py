"""Mask2Former's toy training step, the code before commit efa3c21 vs now, in one process.

The pre-efa3c21 deformable-attention sum (read from git), point selection
(d2ext.layers.uncertain_points_with_randomness) and per-mask matcher sampling are
swapped in and out of the same model:

1. losses and gradients of both on the same batches and seeds (equal up to rounding);
2. interleaved timings (old, new alternately, medians) of the pixel decoder
   (forward + backward), the criterion (matcher + losses, forward + backward) and
   the whole model's forward + backward (the training step without the optimizer).

    OMP_NUM_THREADS=1 python tools/ab_mask2former_step.py [N pairs, default 8] [parts, e.g. "whole"]
"""
import copy
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402

import benchmark as B  # noqa: E402
from detectron2.utils.events import EventStorage
import d2ext_projects.maskformer.ms_deform_attn as msda_mod
from d2ext_projects.maskformer.criterion import SetCriterion
from d2ext_projects.maskformer.matcher import HungarianMatcher
from d2ext.layers import binary_uncertainty, point_sample, uncertain_points_with_randomness

def _old_module(rev: str = "a0986ab", path: str = "projects/maskformer/ms_deform_attn.py"):
    src = subprocess.run(["git", "show", f"{rev}:{path}"], check=True, capture_output=True, text=True).stdout
    fd, name = tempfile.mkstemp(suffix=".py")
    with os.fdopen(fd, "w") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location("old_ms_deform_attn", name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    os.unlink(name)
    return module


old_msda = _old_module()

NEW = dict(msda=msda_mod.ms_deform_attn, pp=SetCriterion._point_pairs, mp=HungarianMatcher._mask_pairs)

def old_point_pairs(self, src, tgt):
    with torch.no_grad():
        coords = uncertain_points_with_randomness(src[:, None], binary_uncertainty, self.num_points,
                                                  self.oversample_ratio, self.importance_sample_ratio)
        tgt = point_sample(tgt[:, None].to(src.dtype), coords, align_corners=False)[:, 0]
    src = point_sample(src[:, None], coords, align_corners=False)[:, 0]
    return src, tgt

def old_mask_pairs(self, pred_masks, tgt_masks):
    coords = torch.rand(1, self.num_points, 2, device=pred_masks.device)
    pred = point_sample(pred_masks[:, None], coords.expand(len(pred_masks), -1, -1), align_corners=False)
    tgt = point_sample(tgt_masks[:, None].to(pred_masks.dtype), coords.expand(len(tgt_masks), -1, -1), align_corners=False)
    return pred[:, 0], tgt[:, 0]

def use(old):
    msda_mod.ms_deform_attn = old_msda.ms_deform_attn if old else NEW["msda"]
    SetCriterion._point_pairs = old_point_pairs if old else NEW["pp"]
    HungarianMatcher._mask_pairs = old_mask_pairs if old else NEW["mp"]

torch.set_num_threads(1)
cfgf = "configs/mask2former/toy/maskformer2_R18_toy_panoptic.yaml"
n = int(sys.argv[1]) if len(sys.argv) > 1 else 8
args = B.get_parser().parse_args(["--config-file", cfgf, "--task", "train", "--device", "cpu", "--warmup", "1",
                                  "--iters", "3", "--threads", "1", "--no-flops"])
with EventStorage(0):
    run = B._Run("base", cfgf, [], args)
    model = run.model
    batches = run._prefetch(2)
    model.train()
    # 1) equal losses and gradients on the real model, 2 batches
    state = copy.deepcopy(model.state_dict())
    for bi, data in enumerate(batches):
        res = []
        for old in (True, False):
            use(old); model.load_state_dict(state); model.zero_grad()
            torch.manual_seed(100 + bi)
            losses = model(data); total = sum(losses.values()); total.backward()
            g = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
            res.append(({k: v.item() for k, v in losses.items()}, g.clone()))
        (lo, go), (ln, gn) = res
        rel = max(abs(lo[k] - ln[k]) / max(abs(lo[k]), 1e-12) for k in lo)
        cos = torch.nn.functional.cosine_similarity(go.double(), gn.double(), dim=0).item()
        print(f"batch {bi}: {len(lo)} losses, max rel diff {rel:.2e}, total old {sum(lo.values()):.6f} new {sum(ln.values()):.6f}, "
              f"grad cosine {cos:.8f}, grad rel L2 diff {((go-gn).norm()/go.norm()).item():.2e}")
    # 2) interleaved timing of parts: pixel decoder fwd+bwd, criterion fwd+bwd
    data = batches[0]
    with torch.no_grad():
        outs, imgs = model._predict([x["image"] for x in data])
        feats = model.backbone(imgs.tensor)
        targets = model.prepare_targets(data, imgs)
    def pd():
        f = {k: v.detach().requires_grad_(True) for k, v in feats.items()}
        o = model.sem_seg_head.pixel_decoder.forward_features(f)
        (o[0].sum() + o[1].sum() + sum(x.sum() for x in o[2])).backward()
    def crit():
        o = {"pred_logits": outs["pred_logits"].detach().requires_grad_(True), "pred_masks": outs["pred_masks"].detach().requires_grad_(True),
             "aux_outputs": [{k: v.detach().requires_grad_(True) for k, v in a.items()} for a in outs["aux_outputs"]]}
        sum(model.criterion(o, targets).values()).backward()
    def step():
        model.zero_grad()
        sum(model(data).values()).backward()
    parts = [("pixel decoder fwd+bwd", pd), ("criterion (matcher + losses) fwd+bwd", crit),
             ("whole model fwd+bwd", step)]
    only = sys.argv[2].split(",") if len(sys.argv) > 2 else None  # e.g. "whole"
    for name, fn in parts:
        if only and not any(o in name for o in only):
            continue
        times = {True: [], False: []}
        for i in range(n):
            for old in ((True, False) if i % 2 == 0 else (False, True)):
                use(old); torch.manual_seed(i)
                t = time.perf_counter(); fn(); times[old].append(time.perf_counter() - t)
        mo, mn = statistics.median(times[True]), statistics.median(times[False])
        print(name, "old", [round(x, 3) for x in times[True]], "median", round(mo, 3))
        print(name, "new", [round(x, 3) for x in times[False]], "median", round(mn, 3), f"new/old {mn / mo:.3f}")
