"""Tests of cls_attention_map, attention_rollout (against a brute-force loop) and position_embedding_similarity."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vlblocks.hooks import (
    attention_rollout,
    cls_attention_map,
    position_embedding_similarity,
    record_attention,
)

B, H, P, GH, GW = 2, 3, 2, 3, 4  # batch, heads, prefix tokens, grid
N = P + GH * GW


def _maps(layers: int = 3) -> list[torch.Tensor]:
    return [torch.randn(B, H, N, N).softmax(dim=-1) for _ in range(layers)]


# ----------------------------------------------------------------------------------------------------- CLS maps


def test_cls_map_reads_the_query_row_over_patches() -> None:
    maps = _maps(1)[0]
    out = cls_attention_map(maps, grid=(GH, GW), prefix_tokens=P)
    assert out.shape == (B, GH, GW)
    expected = maps.mean(dim=1)[:, 0, P:].reshape(B, GH, GW)
    torch.testing.assert_close(out, expected)
    assert out[1, 2, 3] == maps[1, :, 0, N - 1].mean()  # row-major layout: the last patch is bottom right
    dist = cls_attention_map(maps, grid=(GH, GW), prefix_tokens=P, query=1, head_fusion="max")
    torch.testing.assert_close(dist, maps.amax(dim=1)[:, 1, P:].reshape(B, GH, GW))
    assert not torch.allclose(dist, out)  # control: another query row, another map
    reduced = cls_attention_map(maps.mean(dim=1), grid=(GH, GW), prefix_tokens=P)  # (B, Nq, Nk) input
    torch.testing.assert_close(reduced, out)


def test_cls_map_of_a_timm_model_with_registers() -> None:
    timm = pytest.importorskip("timm")
    model = timm.create_model(
        "vit_small_patch14_reg4_dinov2", pretrained=False, img_size=32, patch_size=8, depth=1, embed_dim=32,
        num_heads=2, num_classes=0,
    ).eval()  # fmt: skip
    with record_attention(model, rows=0) as rec:
        model(torch.randn(B, 3, 32, 32))
    maps = rec.maps["blocks.0.attn"]  # (B, H, 1, 1 + 4 registers + 16 patches)
    out = cls_attention_map(maps, grid=4, prefix_tokens=model.num_prefix_tokens)
    assert out.shape == (B, 4, 4)
    torch.testing.assert_close(out.flatten(1), maps.mean(dim=1)[:, 0, 5:])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"grid": (4, 4)}, r"maps must have prefix_tokens \+ h\*w = 2 \+ 16 keys for grid \(4, 4\), got 14"),
        ({"grid": 0}, "grid must be a positive int or a pair"),
        ({"grid": (GH, GW), "query": N}, "query must index the 14 recorded query rows"),
        ({"grid": (GH, GW), "head_fusion": "sum"}, "head_fusion must be one of"),
        ({"grid": (GH, GW), "prefix_tokens": -1}, "prefix_tokens must be a non-negative int"),
    ],
)
def test_cls_map_errors(kwargs: dict, message: str) -> None:
    kwargs.setdefault("prefix_tokens", P)
    with pytest.raises(ValueError, match=message):
        cls_attention_map(_maps(1)[0], **kwargs)


# ------------------------------------------------------------------------------------------------------- rollout


def _brute_force_rollout(maps: list[torch.Tensor], discard_ratio: float, head_fusion: str) -> torch.Tensor:
    """Item by item, entry by entry, in float64."""
    out = torch.zeros(B, N, N, dtype=torch.float64)
    for b in range(B):
        joint = torch.eye(N, dtype=torch.float64)
        for layer in maps:
            heads = layer[b].double()
            a = {"mean": heads.mean(0), "max": heads.max(0).values, "min": heads.min(0).values}[
                head_fusion
            ].clone()
            entries = sorted((a[i, j].item(), i, j) for i in range(N) for j in range(1, N))
            for _, i, j in entries[: int(len(entries) * discard_ratio)]:
                a[i, j] = 0.0
            a = a + torch.eye(N, dtype=torch.float64)
            a = a / a.sum(dim=1, keepdim=True)
            joint = a @ joint
        out[b] = joint
    return out


@pytest.mark.parametrize("head_fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("discard_ratio", [0.0, 0.5])
def test_rollout_equals_brute_force(discard_ratio: float, head_fusion: str) -> None:
    maps = _maps(3)
    out = attention_rollout(maps, discard_ratio=discard_ratio, head_fusion=head_fusion)
    assert out.shape == (B, N, N)
    expected = _brute_force_rollout(maps, discard_ratio, head_fusion)
    torch.testing.assert_close(out.double(), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.sum(-1), torch.ones(B, N))  # rows stay distributions
    # control: the order of the layers matters
    assert not torch.allclose(
        attention_rollout(maps[::-1], discard_ratio=discard_ratio, head_fusion=head_fusion), out
    )


def test_rollout_of_one_layer_is_half_attention_half_identity() -> None:
    maps = _maps(1)
    fused = maps[0].mean(dim=1)
    torch.testing.assert_close(attention_rollout(maps), (fused + torch.eye(N)) / 2)


def test_rollout_never_discards_the_cls_column() -> None:
    layer = torch.rand(B, 1, N, N) + 1.0
    layer[..., 0] = 0.01  # attention to CLS is the smallest of all entries
    layer[..., 5] = 0.02  # and column 5 the next smallest
    layer = layer / layer.sum(-1, keepdim=True)
    out = attention_rollout({"blocks.0.attn": layer}, discard_ratio=0.1)
    assert (out[:, 1:, 0] > 0).all()  # CLS column kept
    assert (out[:, torch.arange(N) != 5, 5] == 0).all()  # the next smallest column was discarded


def test_rollout_errors() -> None:
    with pytest.raises(ValueError, match="at least one layer"):
        attention_rollout([])
    with pytest.raises(ValueError, match=r"discard_ratio must be a number in \[0, 1\)"):
        attention_rollout(_maps(1), discard_ratio=1.0)
    with pytest.raises(ValueError, match=r"maps\[1\] must have shape"):
        attention_rollout([_maps(1)[0], torch.rand(B, H, N - 1, N - 1)])


# ------------------------------------------------------------------------------------- position-embedding similarity


def _check_similarity(sim: torch.Tensor, patches: torch.Tensor, grid: tuple[int, int]) -> None:
    n = grid[0] * grid[1]
    assert sim.shape == (n, *grid)
    flat = sim.reshape(n, n)
    torch.testing.assert_close(flat.diagonal(), torch.ones(n))
    torch.testing.assert_close(flat, flat.T)
    torch.testing.assert_close(flat[1, n - 1], F.cosine_similarity(patches[1], patches[n - 1], dim=0))


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "vit_small_patch14_reg4_dinov2"])
def test_pos_embed_similarity_timm(name: str) -> None:
    timm = pytest.importorskip("timm")
    model = timm.create_model(
        name, pretrained=False, img_size=32, patch_size=8, depth=1, embed_dim=32, num_heads=2
    )
    with torch.no_grad():
        model.pos_embed.normal_()
    sim = position_embedding_similarity(model)
    patches = model.pos_embed[
        0, -16:
    ].detach()  # with a class token in the table (no_embed_class False) it is first
    assert model.no_embed_class == (model.pos_embed.shape[1] == 16)
    _check_similarity(sim, patches, (4, 4))
    # control: reading the table from its first row would be wrong for the model with a class token
    if not model.no_embed_class:
        wrong = position_embedding_similarity(model.pos_embed[0, :16], grid=4, prefix_tokens=0)
        assert not torch.allclose(wrong, sim, atol=1e-3)


def test_pos_embed_similarity_hf_vit_and_clip() -> None:
    transformers = pytest.importorskip("transformers")
    classifier = transformers.ViTForImageClassification(
        transformers.ViTConfig(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32,
            patch_size=8,
        )
    )  # fmt: skip
    vit = classifier.vit
    with torch.no_grad():
        vit.embeddings.position_embeddings.normal_()
    _check_similarity(
        position_embedding_similarity(vit), vit.embeddings.position_embeddings[0, 1:].detach(), (4, 4)
    )
    torch.testing.assert_close(position_embedding_similarity(classifier), position_embedding_similarity(vit))
    clip = transformers.CLIPVisionModel(
        transformers.CLIPVisionConfig(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32,
            patch_size=8,
        )
    )  # fmt: skip
    table = clip.embeddings.position_embedding.weight.detach()  # (1 + 16, D)
    _check_similarity(position_embedding_similarity(clip), table[1:], (4, 4))


def test_pos_embed_similarity_of_a_tensor_with_a_rectangular_grid() -> None:
    table = torch.randn(1, 2 + 6, 8)
    sim = position_embedding_similarity(table, grid=(2, 3), prefix_tokens=2)
    _check_similarity(sim, table[0, 2:], (2, 3))
    with pytest.raises(ValueError, match=r"must hold prefix_tokens \+ h\*w = 1 \+ 6 rows"):
        position_embedding_similarity(table, grid=(2, 3), prefix_tokens=1)
    with pytest.raises(ValueError, match="cannot infer a square patch grid from 8"):
        position_embedding_similarity(table)


def test_caption_maps_of_generate_read_each_word_over_the_patches() -> None:
    """From `generate(..., return_cross_attentions=...)` to (B, T, h, w): layers averaged, heads fused, CLS dropped."""
    from vlblocks.decoders import GPT2Decoder, GPT2DecoderConfig
    from vlblocks.hooks import caption_attention_maps

    torch.manual_seed(0)
    dec = GPT2Decoder(GPT2DecoderConfig(vocab_size=20, n_positions=16, n_embd=16, n_layer=2, n_head=2,
                                        cross_attention=True, bos_token_id=1, eos_token_id=2)).eval()
    with torch.no_grad():
        for p in dec.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    image = torch.randn(2, 1 + GH * GW, 16)
    out = dec.generate(image, max_new_tokens=4, eos_token_id=None, return_cross_attentions=[0, 1])
    maps = caption_attention_maps(out.cross_attentions, grid=(GH, GW), prefix_tokens=1)
    assert maps.shape == (2, 4, GH, GW)
    by_hand = (out.cross_attentions[0] + out.cross_attentions[1]) / 2  # (B, T, H, Ni)
    torch.testing.assert_close(maps, by_hand.mean(2)[..., 1:].reshape(2, 4, GH, GW))
    assert not torch.allclose(maps[:, 0], maps[:, 1])  # control: each word has its own map
    one = caption_attention_maps(out.cross_attentions[1], grid=(GH, GW), head_fusion="max")
    torch.testing.assert_close(one, out.cross_attentions[1].amax(2)[..., 1:].reshape(2, 4, GH, GW))
    with pytest.raises(ValueError, match=r"1 \+ 16 image tokens for grid \(4, 4\), got 13"):
        caption_attention_maps(out.cross_attentions, grid=4)
    with pytest.raises(ValueError, match="return_cross_attentions"):
        caption_attention_maps({}, grid=4)
