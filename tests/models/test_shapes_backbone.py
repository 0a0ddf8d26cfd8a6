"""shapes_backbone: the three pretraining tasks' targets checked against the scenes' objects, and pretraining a tiny
ViT on them (steps, determinism, the encoder's weights move, the loss falls)."""

from __future__ import annotations

import pytest
import torch

from vlblocks.data import SHAPES, ShapesWorld
from vlblocks.encoders.conv_stem import conv_stem_vit
from vlblocks.models.shapes_backbone import PRETRAIN_TASKS, pretrain_on_shapes, pretraining_targets

PATCH = 8


@pytest.fixture(scope="module")
def world() -> ShapesWorld:
    return ShapesWorld("train", num_scenes=24, image_size=32, seed=3)


def _pair(world: ShapesWorld, o) -> int:
    return world.colors.index(o.color) * len(SHAPES) + SHAPES.index(o.shape)


def test_masks_are_the_shape_masks(world: ShapesWorld) -> None:
    targets, pool, classes = pretraining_targets(world, "masks", PATCH)
    assert pool is None and classes == 4 and targets.dtype == torch.int64
    assert torch.equal(targets, world.masks.long())


def test_counts_count_each_colour_shape_pair(world: ShapesWorld) -> None:
    targets, pool, classes = pretraining_targets(world, "counts", PATCH)
    assert pool is None and classes == 19 and targets.shape == (len(world), 18)
    for i in range(len(world)):
        expected = torch.zeros(18)
        for o in world.objects(i):
            expected[_pair(world, o)] += 1
        assert torch.equal(targets[i], expected), i
    assert targets.sum() == sum(len(world.objects(i)) for i in range(len(world))) > 0


def test_objects_label_each_box_and_pool_its_tokens(world: ShapesWorld) -> None:
    labels, pool, classes = pretraining_targets(world, "objects", PATCH)
    side = 32 // PATCH
    assert classes == 19 and labels.shape == (len(world), 9) and pool.shape == (len(world), 9, side * side)
    for i in range(len(world)):
        objects = world.objects(i)
        assert labels[i, : len(objects)].tolist() == [_pair(world, o) for o in objects]
        assert (labels[i, len(objects) : 8] == -100).all() and labels[i, 8] == 18
        for k, o in enumerate(objects):  # equal weights on the tokens whose centre lies in the box
            weights = pool[i, k].view(side, side)
            assert weights.sum().item() == pytest.approx(1.0)
            assert set(weights[weights > 0].tolist()) == {weights.max().item()}
            x, y, w, h = o.bbox
            inside = {
                (r, c)
                for r in range(side)
                for c in range(side)
                if x <= (c + 0.5) * PATCH < x + w and y <= (r + 0.5) * PATCH < y + h
            }
            if not inside:  # a box smaller than a token: the token under the object's centre
                inside = {tuple(min(int(v // PATCH), side - 1) for v in reversed(o.center))}
            assert {tuple(t) for t in (weights > 0).nonzero().tolist()} == inside
        assert (pool[i, len(objects) : 8] == 0).all()
        covered = pool[i, :8].sum(0) > 0
        assert (
            (pool[i, 8] > 0) == ~covered
        ).all()  # the background row: exactly the tokens outside every box


def test_unknown_task_is_refused(world: ShapesWorld) -> None:
    with pytest.raises(ValueError, match="task must be one of"):
        pretraining_targets(world, "boxes", PATCH)


def _pretrain(world: ShapesWorld, task: str, epochs: int = 1, seed: int = 0):
    torch.manual_seed(0)
    encoder = conv_stem_vit(image_size=32, patch_size=PATCH, dim=16, depth=1, heads=2)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    said: list[str] = []
    settings = dict(patch_size=PATCH, epochs=epochs, lr=3e-3, batch_size=8, seed=seed, show_progress=False)
    losses = pretrain_on_shapes(encoder, world, task=task, **settings, say=said.append)
    return encoder, before, losses, said


@pytest.mark.parametrize("task", PRETRAIN_TASKS)
def test_pretraining_trains_the_encoder(world: ShapesWorld, task: str) -> None:
    encoder, before, losses, said = _pretrain(world, task)
    assert len(losses) == 24 // 8 and all(x == x and x > 0 for x in losses)  # finite, positive
    assert said and said[0].startswith(f"backbone: tiny ViT pretrained on ShapesWorld {task}, 3 steps")
    moved = [
        k for k, v in encoder.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])
    ]
    assert any("blocks" in k for k in moved), moved


def test_pretraining_is_deterministic_and_lowers_the_loss(world: ShapesWorld) -> None:
    _, _, losses, _ = _pretrain(world, "masks", epochs=6)
    _, _, again, _ = _pretrain(world, "masks", epochs=6)
    assert losses == again
    _, _, other, _ = _pretrain(world, "masks", epochs=6, seed=1)  # another batch order
    assert other != losses
    assert sum(losses[-3:]) < 0.8 * sum(losses[:3]), losses
