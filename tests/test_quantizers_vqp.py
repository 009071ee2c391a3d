"""movq's quantizers against vector-quantize-pytorch (``vqp``), the library research trains with:
same inputs and weights -> same outputs, indices, losses and gradients, where both have the method.

Tolerances: outputs and gradients 1e-5 (float32; the rotation trick's rotation differs only by
rounding); EMA codebooks after several updates 1e-5 (vqp's smoothing ``(avg + e eps) / (n + eps)``
against movq's Laplace smoothing, equal as ``eps`` -> 0: both run at ``eps=1e-10``).
"""

from __future__ import annotations

import json
import random

import pytest
import torch
from einops import rearrange

from movq.quantizers import FSQ, LFQ, EMAVectorQuantizer, ResidualVectorQuantizer, VectorQuantizer
from movq.quantizers.codes import rotate_to

vqp = pytest.importorskip("vector_quantize_pytorch")
from vector_quantize_pytorch.vector_quantize_pytorch import rotate_to as vqp_rotate_to  # noqa: E402

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def grads(fn, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(value, d(value . g)/dx)`` of ``fn(x)``."""
    x = x.detach().clone().requires_grad_(True)
    out = fn(x)
    (out * g).sum().backward()
    return out.detach(), x.grad


# --------------------------------------------------------------------------------------------
# rotation trick


def test_rotate_to_is_q_in_value_and_vqp_rotation_in_gradient():
    x, q, g = torch.randn(64, 8), torch.randn(64, 8), torch.randn(64, 8)
    ours, our_grad = grads(lambda t: rotate_to(t, q), x, g)
    theirs, their_grad = grads(lambda t: vqp_rotate_to(t, q), x, g)
    torch.testing.assert_close(ours, q, **TOL)  # the forward value of straight-through
    torch.testing.assert_close(ours, theirs, **TOL)
    torch.testing.assert_close(our_grad, their_grad, **TOL)
    # closed form: dL/dx = |q|/|x| R^T g with R the rotation (Householder pair) taking x/|x| to q/|q|
    u, qh = torch.nn.functional.normalize(x, dim=-1), torch.nn.functional.normalize(q, dim=-1)
    w = torch.nn.functional.normalize(u + qh, dim=-1)
    eye = torch.eye(8)
    rot = eye - 2 * w[:, :, None] * w[:, None, :] + 2 * qh[:, :, None] * u[:, None, :]
    expected = (q.norm(dim=-1) / x.norm(dim=-1))[:, None] * torch.einsum("nij,ni->nj", rot, g)
    torch.testing.assert_close(our_grad, expected, **TOL)
    torch.testing.assert_close(torch.einsum("nij,nj->ni", rot, u), qh, **TOL)  # R rotates u onto q_hat


def _vqp_learnable(dim: int, size: int, weight: torch.Tensor, **kw) -> torch.nn.Module:
    """vqp's VectorQuantize with a gradient-trained codebook (movq's ``VectorQuantizer``) set to ``weight``."""
    theirs = vqp.VectorQuantize(dim=dim, codebook_size=size, learnable_codebook=True, ema_update=False,
                                commitment_weight=1.0, **kw)
    with torch.no_grad():
        theirs._codebook.embed.copy_(weight.reshape(theirs._codebook.embed.shape))
    return theirs


@pytest.mark.parametrize("rotation", [False, True])
def test_vq_matches_vqp_learnable_codebook(rotation):
    ours = VectorQuantizer(16, 6, legacy=False, beta=1.0, rotation_trick=rotation)
    with torch.no_grad():
        ours.embedding.weight.normal_()
    theirs = _vqp_learnable(6, 16, ours.embedding.weight, rotation_trick=rotation)
    z, g = torch.randn(3, 10, 6), torch.randn(3, 10, 6)  # a sequence [B, N, D], vqp's layout
    zo, zt = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    out = ours.train()(zo)
    q, idx, loss = theirs.train()(zt)
    assert torch.equal(out.indices, idx)
    torch.testing.assert_close(out.z_q, q, **TOL)
    torch.testing.assert_close(out.loss, 2 * loss, **TOL)  # movq: codebook + commitment terms; vqp: one mse
    ((out.z_q * g).sum() + out.loss).backward()  # gradients as vqp's mse(q, x): 2(x - q) / n to both
    ((q * g).sum() + loss).backward()
    torch.testing.assert_close(zo.grad, zt.grad, **TOL)
    torch.testing.assert_close(ours.embedding.weight.grad, theirs._codebook.embed.grad[0], **TOL)


def test_separate_codebooks_per_head_match_vqp():
    ours = VectorQuantizer(8, 6, groups=2, separate_codebooks=True, legacy=False, beta=1.0, rotation_trick=True)
    with torch.no_grad():
        ours.embedding.weight.normal_()
    assert ours.embedding.weight.shape == (16, 3)
    theirs = _vqp_learnable(6, 8, ours.embedding.weight, heads=2, separate_codebook_per_head=True, codebook_dim=3,
                            rotation_trick=True)
    z, g = torch.randn(2, 12, 6), torch.randn(2, 12, 6)
    zo, zt = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    out = ours.train()(zo)
    q, idx, loss = theirs.train()(zt)
    assert out.indices.shape == (2, 2, 12) and idx.shape == (2, 12, 2)
    assert torch.equal(out.indices, rearrange(idx, "b n h -> b h n"))
    torch.testing.assert_close(out.z_q, q, **TOL)
    ((out.z_q * g).sum() + out.loss).backward()  # gradients as vqp's mse(q, x): 2(x - q) / n to both
    ((q * g).sum() + loss).backward()
    torch.testing.assert_close(zo.grad, zt.grad, **TOL)
    torch.testing.assert_close(ours.embedding.weight.grad, theirs._codebook.embed.grad.reshape(16, 3), **TOL)
    # the two heads really use different codebooks: the same vector gets different codes
    same = torch.randn(1, 1, 3).repeat(1, 1, 2)
    row = ours.eval()(same).indices[0, :, 0]
    books = ours.embedding.weight.detach().split(8)
    assert row.tolist() == [int(torch.cdist(same[0, :, :3], b).argmin()) for b in books]
    torch.testing.assert_close(ours.embed(ours(z).indices), ours(z).z_q)


@pytest.mark.parametrize("heads", ["one", "shared", "separate"])
@pytest.mark.parametrize("cosine", [False, True])
@pytest.mark.parametrize("rotation", [False, True])
def test_ema_matches_vqp_over_several_updates(cosine, rotation, heads):
    decay, beta, size = 0.8, 0.7, 12
    groups, separate = {"one": (1, False), "shared": (2, False), "separate": (2, True)}[heads]
    dim, books = 3 * groups, 2 if separate else 1
    ours = EMAVectorQuantizer(size, dim, decay=decay, eps=1e-10, beta=beta, dead_code_threshold=0.0,
                              use_cosine_sim=cosine, rotation_trick=rotation, groups=groups,
                              separate_codebooks=separate)
    theirs = vqp.VectorQuantize(dim=dim, codebook_size=size, decay=decay, eps=1e-10, commitment_weight=beta,
                                use_cosine_sim=cosine, rotation_trick=rotation, dead_code_threshold_ratio=0.0,
                                heads=groups, separate_codebook_per_head=separate, codebook_dim=3)
    book = theirs._codebook
    assert ours.embedding.weight.shape == (books * size, 3)
    with torch.no_grad():  # same state: every code seen once
        ours.embedding.cluster_size.fill_(1.0)
        ours.embedding.embed_avg.copy_(ours.embedding.weight)
        book.embed.copy_(ours.embedding.weight.view(books, size, 3))
        book.embed_avg.copy_(ours.embedding.embed_avg.view(books, size, 3))
        book.cluster_size.copy_(ours.embedding.cluster_size.view(books, size))
    ours.train(), theirs.train()
    for _ in range(4):
        z, g = 2 * torch.randn(4, 9, dim), torch.randn(4, 9, dim)
        zo, zt = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
        out = ours(zo)
        q, idx, loss = theirs(zt)
        assert torch.equal(out.indices, idx if groups == 1 else rearrange(idx, "b n h -> b h n"))
        torch.testing.assert_close(out.z_q, q, **TOL)
        torch.testing.assert_close(out.loss, loss, **TOL)
        ((out.z_q * g).sum() + out.loss).backward()
        ((q * g).sum() + loss).backward()
        torch.testing.assert_close(zo.grad, zt.grad, **TOL)
        torch.testing.assert_close(ours.embedding.weight, book.embed.reshape(-1, 3), **TOL)
        torch.testing.assert_close(ours.embedding.cluster_size, book.cluster_size.reshape(-1), **TOL)
    if cosine:
        torch.testing.assert_close(ours.embedding.weight.norm(dim=-1), torch.ones(books * size), **TOL)
    torch.testing.assert_close(ours.eval().embed(ours(z).indices), ours(z).z_q, **TOL)


# --------------------------------------------------------------------------------------------
# FSQ / LFQ


@pytest.mark.parametrize("symmetric", [False, True])
def test_fsq_num_codebooks_matches_vqp(symmetric):
    levels = (8, 5, 3) if not symmetric else (2, 4, 5)  # vqp takes a level of 2 only with preserve_symmetry
    ours = FSQ(levels, num_codebooks=2, symmetric=symmetric)
    theirs = vqp.FSQ(levels=list(levels), num_codebooks=2, preserve_symmetry=symmetric)
    assert ours.dim == theirs.dim == 6 and ours.indices_shape(1, 7) == (2, 1, 7)
    z, g = 2 * torch.randn(3, 7, 6), torch.randn(3, 7, 6)
    (ours_q, our_grad), (their_q, their_grad) = (grads(lambda t, m=m: m(t)[0] if m is theirs else m(t).z_q, z, g)
                                                 for m in (ours, theirs))
    torch.testing.assert_close(ours_q, their_q, **TOL)
    torch.testing.assert_close(our_grad, their_grad, **TOL)
    out = ours(z)
    assert torch.equal(out.indices, rearrange(theirs(z)[1].long(), "b n c -> b c n"))
    torch.testing.assert_close(ours.embed(out.indices), out.z_q)
    torch.testing.assert_close(ours.embed(out.indices), theirs.indices_to_codes(theirs(z)[1]))


@pytest.mark.parametrize("spherical", [False, True])
def test_lfq_num_codebooks_and_spherical_match_vqp(spherical):
    # one bit per codebook: the codebook entropy movq computes from bit marginals is then exact
    ours = LFQ(dim=6, num_codebooks=6, spherical=spherical, entropy_weight=0.3, commitment_weight=0.2,
               inv_temperature=1.0)
    theirs = vqp.LFQ(dim=6, codebook_size=2, num_codebooks=6, spherical=spherical, entropy_loss_weight=0.3,
                     commitment_loss_weight=0.2)
    z, g = torch.randn(2, 10, 6), torch.randn(2, 10, 6)
    zo, zt = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    out = ours.train()(zo)
    q, idx, loss = theirs.train()(zt, inv_temperature=1.0)
    assert torch.equal(out.indices, rearrange(idx, "b n c -> b c n"))
    torch.testing.assert_close(out.z_q, q, **TOL)
    torch.testing.assert_close(out.loss, loss, **TOL)
    ((out.z_q * g).sum() + out.loss).backward()
    ((q * g).sum() + loss).backward()
    torch.testing.assert_close(zo.grad, zt.grad, **TOL)


@pytest.mark.parametrize("spherical", [False, True])
def test_bsq_many_bits_per_code_match_vqp(spherical):
    """BSQ at 2 codebooks of 4 bits: codes, indices, commitment loss and gradients as vqp's (the
    entropy term is movq's bit-marginal bound there, so it is off)."""
    ours = LFQ(dim=8, num_codebooks=2, spherical=spherical, entropy_weight=0.0, commitment_weight=0.5)
    theirs = vqp.LFQ(dim=8, codebook_size=16, num_codebooks=2, spherical=spherical, entropy_loss_weight=0.0,
                     commitment_loss_weight=0.5)
    z, g = torch.randn(2, 10, 8), torch.randn(2, 10, 8)
    zo, zt = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    out = ours.train()(zo)
    q, idx, loss = theirs.train()(zt)
    assert torch.equal(out.indices, rearrange(idx, "b n c -> b c n"))
    torch.testing.assert_close(out.z_q, q, **TOL)
    torch.testing.assert_close(out.loss, loss, **TOL)
    ((out.z_q * g).sum() + out.loss).backward()
    ((q * g).sum() + loss).backward()
    torch.testing.assert_close(zo.grad, zt.grad, **TOL)
    torch.testing.assert_close(ours.embed(out.indices), theirs.indices_to_codes(idx), **TOL)
    if spherical:
        torch.testing.assert_close(out.z_q.reshape(2, 10, 2, 4).norm(dim=-1), torch.ones(2, 10, 2), **TOL)


# --------------------------------------------------------------------------------------------
# residual FSQ / LFQ and quantize dropout


def _dropout_seed(cutoff: int, depth: int, kept: int) -> int:
    """A seed for which vqp's ``random.Random(seed).randrange(cutoff, depth)`` keeps ``kept`` levels."""
    return next(s for s in range(10000) if random.Random(s).randrange(cutoff, depth) == kept - 1)


@pytest.mark.parametrize("dropout", [False, True])
def test_residual_fsq_matches_vqp(dropout):
    levels, depth = (8, 5, 5, 3), 3
    ours = ResidualVectorQuantizer(1, 4, depth=depth, stage="fsq", levels=levels, quantize_dropout=dropout,
                                   quantize_dropout_cutoff=1)
    theirs = vqp.ResidualFSQ(levels=list(levels), num_quantizers=depth, dim=4, quantize_dropout=dropout,
                             quantize_dropout_cutoff_index=1)
    assert ours.codebook_size == theirs.codebook_size == 600
    for _ in range(3 if dropout else 1):
        z, g = 1.5 * torch.randn(2, 9, 4), torch.randn(2, 9, 4)
        zo, zt = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
        out = ours.train()(zo)
        kept = int((out.indices[0, :, 0] >= 0).sum())
        seed = _dropout_seed(1, depth, kept) if dropout else None
        q, idx = theirs.train()(zt, rand_quantize_dropout_fixed_seed=seed)
        assert torch.equal(out.indices, rearrange(idx, "b n q -> b q n"))
        torch.testing.assert_close(out.z_q, q, **TOL)
        (out.z_q * g).sum().backward()
        (q * g).sum().backward()
        torch.testing.assert_close(zo.grad, zt.grad, **TOL)
        torch.testing.assert_close(ours.embed(out.indices), out.z_q.detach(), **TOL)
        torch.testing.assert_close(ours.embed(out.indices), theirs.get_output_from_indices(idx), **TOL)
    assert out.loss.item() == 0.0


@pytest.mark.parametrize("dropout", [False, True])
def test_residual_lfq_matches_vqp(dropout):
    depth = 3
    ours = ResidualVectorQuantizer(1, 5, depth=depth, stage="lfq", beta=0.4, entropy_weight=0.0,
                                   quantize_dropout=dropout, quantize_dropout_cutoff=1)
    theirs = vqp.ResidualLFQ(dim=5, num_quantizers=depth, codebook_size=32, commitment_loss_weight=0.4,
                             entropy_loss_weight=0.0, quantize_dropout=dropout, quantize_dropout_cutoff_index=1)
    assert ours.codebook_size == 32
    for _ in range(3 if dropout else 1):
        z, g = torch.randn(2, 9, 5), torch.randn(2, 9, 5)
        zo, zt = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
        out = ours.train()(zo)
        kept = int((out.indices[0, :, 0] >= 0).sum())
        seed = _dropout_seed(1, depth, kept) if dropout else None
        q, idx, losses = theirs.train()(zt, rand_quantize_dropout_fixed_seed=seed)
        assert torch.equal(out.indices, rearrange(idx, "b n q -> b q n"))
        torch.testing.assert_close(out.z_q, q, **TOL)
        torch.testing.assert_close(out.loss, losses[:kept].mean(), **TOL)  # movq: the mean over the levels used
        ((out.z_q * g).sum() + out.loss).backward()
        ((q * g).sum() + losses[:kept].mean()).backward()
        torch.testing.assert_close(zo.grad, zt.grad, **TOL)
        torch.testing.assert_close(ours.embed(out.indices), theirs.get_output_from_indices(idx), **TOL)


def test_residual_vq_rotation_trick_rotates_z_onto_the_sum_of_codes():
    ours = ResidualVectorQuantizer(16, 4, depth=3, rotation_trick=True, shared_codebook=False)
    with torch.no_grad():
        for book in ours.embeddings:
            book.weight.normal_()
    z, g = torch.randn(2, 7, 4), torch.randn(2, 7, 4)
    value, grad = grads(lambda t: ours(t).z_q, z, g)
    total = ours.embed(ours(z).indices)
    torch.testing.assert_close(value, total, **TOL)  # forward: the straight-through value
    _, expected = grads(lambda t: vqp_rotate_to(t, total), z, g)
    torch.testing.assert_close(grad, expected, **TOL)
    assert not torch.allclose(grad, g)  # not straight-through


def test_quantize_dropout_cutoff_and_seed():
    q = ResidualVectorQuantizer(16, 4, depth=5, quantize_dropout=True, quantize_dropout_cutoff=2).train()
    z = torch.randn(2, 4, 3, 3)

    def kept_sequence(seed: int) -> list[int]:
        torch.manual_seed(seed)
        return [int((q(z).indices[0, :, 0, 0] >= 0).sum()) for _ in range(40)]

    kept = kept_sequence(1)
    assert set(kept) == {3, 4, 5}  # levels 0..cutoff are always kept
    assert kept_sequence(1) == kept and kept_sequence(2) != kept  # seeded
    assert (q.eval()(z).indices >= 0).all()  # training only
    with pytest.raises(ValueError, match="'quantize_dropout_cutoff': must be < depth"):
        ResidualVectorQuantizer(16, 4, depth=2, quantize_dropout_cutoff=2)
    from movq.config import CodecConfig

    with pytest.raises(ValueError, match="quantize_dropout_cutoff"):  # a codec config is refused before any work
        CodecConfig.from_dict({"quantizer": {"kind": "residual", "depth": 2, "quantize_dropout_cutoff": 3}})


# --------------------------------------------------------------------------------------------
# movq-train


@pytest.mark.parametrize("quantizer", [
    {"kind": "vq", "codebook_size": 16, "rotation_trick": True},
    {"kind": "vq", "codebook_size": 16, "groups": 2, "separate_codebooks": True},
    {"kind": "ema", "codebook_size": 16, "use_cosine_sim": True, "rotation_trick": True},
    {"kind": "ema", "codebook_size": 16, "groups": 2, "separate_codebooks": True},
    {"kind": "residual", "codebook_size": 16, "depth": 2, "rotation_trick": True, "quantize_dropout": True,
     "quantize_dropout_cutoff": 1},
    {"kind": "residual", "stage": "fsq", "levels": [5, 5, 4, 4], "depth": 2},
    {"kind": "residual", "stage": "lfq", "depth": 2},
    {"kind": "lfq", "spherical": True, "num_codebooks": 2},
    {"kind": "fsq", "levels": [4, 4], "num_codebooks": 2},
], ids=lambda q: "-".join(str(v) for v in q.values())[:60])
def test_every_option_trains_through_movq_train_flags(tmp_path, quantizer):
    from helpers import TRAIN_CODEC
    from movq.train.cli import config_from_args
    from movq.train.trainer import build_codec

    codec_flag = json.dumps({**TRAIN_CODEC, "quantizer": quantizer})
    cfg = config_from_args(["--data", str(tmp_path), "--out", str(tmp_path / "out"), "--codec", codec_flag])
    codec = build_codec(cfg)
    for key, value in quantizer.items():
        if key != "kind":
            assert getattr(codec.quantize, key) == (tuple(value) if isinstance(value, list) else value), key
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    out = codec(x)
    (out.sample.square().mean() + out.quantizer.loss).backward()
    assert codec.encoder.conv_in.weight.grad.abs().sum() > 0
    tokens = codec.eval().encode(x)
    assert tokens.shape == (2, *codec.quantize.indices_shape(8, 8))
