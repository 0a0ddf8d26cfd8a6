"""One rank of the 2-process gloo test in test_distributed.py (run as a script with torchrun's env variables).

Each rank runs a tiny two-tower model wrapped in DDP on its half of a fixed global batch, for each loss, and rank 0
writes the mean loss over ranks and the (DDP-averaged) gradients to OUT/<loss>.safetensors.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import save_file
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vlblocks.losses import contrastive_loss, siglip_loss
from vlblocks.training.distributed import all_reduce_mean, cleanup_distributed, setup_distributed

GLOBAL_BATCH, DIM_IN, E = 8, 12, 6


def open_clip_loss_module():
    """open_clip/loss.py alone (it imports only torch): importing the open_clip package takes ~10 s per rank."""
    folder = importlib.util.find_spec("open_clip").submodule_search_locations[0]
    spec = importlib.util.spec_from_file_location("open_clip_loss", Path(folder) / "loss.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TwoTower(nn.Module):
    """Linear image and text towers, a log logit scale and a bias: enough to check every gradient."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.image = nn.Linear(DIM_IN, E)
        self.text = nn.Linear(DIM_IN, E)
        self.log_scale = nn.Parameter(torch.tensor(2.0))
        self.bias = nn.Parameter(torch.tensor(-3.0))

    def forward(self, x_image: torch.Tensor, x_text: torch.Tensor) -> tuple:
        return self.image(x_image), self.text(x_text), self.log_scale.exp(), self.bias


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(GLOBAL_BATCH, DIM_IN, generator=g), torch.randn(GLOBAL_BATCH, DIM_IN, generator=g)


def loss_of(kind: str, image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor):
    # CLIP does not use the bias: "+ 0 * bias" keeps every parameter in DDP's graph
    if kind == "clip":
        return contrastive_loss(image, text, scale) + 0 * bias
    if kind == "clip_local":
        return contrastive_loss(image, text, scale, gather=False) + 0 * bias
    return siglip_loss(image, text, scale, bias)


def main(out: Path) -> None:
    info = setup_distributed(device="cpu", timeout_s=300)  # a loaded machine may stall a rank for a minute
    rank, world = info.rank, info.world_size
    x_image, x_text = inputs()
    open_clip_loss = open_clip_loss_module()
    local = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    for kind in ("clip", "clip_local", "siglip"):
        model = DistributedDataParallel(TwoTower())
        image, text, scale, bias = model(x_image[local], x_text[local])
        loss = loss_of(kind, image, text, scale, bias)
        loss.backward()
        results = {"loss": all_reduce_mean(loss)}
        for name, param in model.module.named_parameters():
            results[f"grad.{name}"] = param.grad.detach().clone()
        # open_clip's distributed losses on the same embeddings (local-loss form, gather with gradients)
        with torch.no_grad():
            i, t = (nn.functional.normalize(x, dim=-1) for x in (image, text))
            if kind == "clip":
                ref_fn = open_clip_loss.ClipLoss(local_loss=True, gather_with_grad=True, rank=rank, world_size=world)
                ref = ref_fn(i, t, scale)
                results["open_clip_loss"] = all_reduce_mean(ref)
            if kind == "siglip":
                ref_fn = open_clip_loss.SigLipLoss(rank=rank, world_size=world, dist_impl="gather")
                ref = ref_fn(i, t, scale, bias)
                results["open_clip_loss"] = all_reduce_mean(ref)
        if rank == 0:
            save_file({k: v.contiguous() for k, v in results.items()}, str(out / f"{kind}.safetensors"))
    dist.barrier()
    cleanup_distributed()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
