"""Numerical tests of the quantizer family (small sizes, CPU)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from movq.config import EMAConfig, FSQConfig, GumbelConfig, LFQConfig, ResidualConfig, VQConfig
from movq.quantizers import (
    FSQ,
    LFQ,
    EMAVectorQuantizer,
    GumbelQuantizer,
    IndexPropagationQuantizer,
    ProjectedQuantizer,
    Quantizer,
    ResidualVectorQuantizer,
    SimVQ,
    VectorQuantizer,
    build_quantizer,
    code_statistics,
    nearest_code,
)
from movq.quantizers.ema import kmeans


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def flat(z: torch.Tensor) -> torch.Tensor:
    return rearrange(z, "b d h w -> (b h w) d")


def blobs(n: int, centers: torch.Tensor, std: float = 0.1) -> torch.Tensor:
    """``n`` points ``[n, D]`` drawn around random ``centers`` ``[C, D]``."""
    which = torch.randint(0, centers.shape[0], (n,))
    return centers[which] + std * torch.randn(n, centers.shape[1])


def as_latent(points: torch.Tensor, h: int = 4) -> torch.Tensor:
    """``[N, D]`` -> ``[N / h^2, D, h, h]``."""
    return rearrange(points, "(b h w) d -> b d h w", h=h, w=h)


# --------------------------------------------------------------------------------------------
# nearest_code / code_statistics


def test_nearest_code_matches_cdist_argmin():
    z = torch.randn(301, 6)
    codebook = torch.randn(37, 6)
    expected = torch.cdist(z.double(), codebook.double()).argmin(dim=1)
    assert torch.equal(nearest_code(z, codebook), expected)


@pytest.mark.parametrize("chunk", [1, 7, 64, 100, 301, 1000])
def test_nearest_code_chunked_equals_unchunked(chunk):
    z = torch.randn(301, 5)
    codebook = torch.randn(50, 5)
    unchunked = nearest_code(z, codebook, chunk_size=10**6)
    assert torch.equal(nearest_code(z, codebook, chunk_size=chunk), unchunked)


def test_nearest_code_is_fp32_for_bf16_inputs():
    z = torch.randn(200, 8).bfloat16()
    codebook = torch.randn(64, 8).bfloat16()
    expected = torch.cdist(z.double(), codebook.double()).argmin(dim=1)
    assert torch.equal(nearest_code(z, codebook), expected)


def test_code_statistics_values():
    perplexity, usage = code_statistics(torch.tensor([0, 0, 1, 1]), 8)
    assert perplexity.item() == pytest.approx(2.0)
    assert usage.item() == pytest.approx(2 / 8)
    perplexity, usage = code_statistics(torch.tensor([3, 2**30]), 2**40)  # implicit huge codebook
    assert perplexity.item() == pytest.approx(2.0)
    assert usage.item() == pytest.approx(2 / 2**40)


# --------------------------------------------------------------------------------------------
# shared behaviour


def _all_quantizers() -> dict[str, Quantizer]:
    return {
        "vq": VectorQuantizer(16, 4),
        "vq_groups": VectorQuantizer(16, 4, groups=2),
        "vq_l2_factorised": VectorQuantizer(16, 4, code_dim=3, l2_normalize=True),
        "vq_rotation": VectorQuantizer(16, 4, rotation_trick=True),
        "vq_separate": VectorQuantizer(16, 4, groups=2, separate_codebooks=True),
        "ema": EMAVectorQuantizer(16, 4),
        "ema_cosine_rotation": EMAVectorQuantizer(16, 4, use_cosine_sim=True, rotation_trick=True),
        "ema_separate_heads": EMAVectorQuantizer(16, 4, groups=2, separate_codebooks=True),
        "gumbel": GumbelQuantizer(16, 4),
        "residual": ResidualVectorQuantizer(16, 4, depth=3),
        "residual_rotation_dropout": ResidualVectorQuantizer(16, 4, depth=3, rotation_trick=True,
                                                             quantize_dropout=True, quantize_dropout_cutoff=1),
        "residual_fsq": ResidualVectorQuantizer(1, 4, depth=3, stage="fsq", levels=(5, 4, 4, 3)),
        "residual_lfq": ResidualVectorQuantizer(1, 4, depth=3, stage="lfq"),
        "fsq": FSQ((3, 4, 5, 2)),
        "fsq_books_symmetric": FSQ((3, 4), num_codebooks=2, symmetric=True),
        "lfq": LFQ(dim=4),
        "lfq_spherical_books": LFQ(dim=4, num_codebooks=2, spherical=True),
        "ibq": IndexPropagationQuantizer(16, 4),
        "projected": ProjectedQuantizer(16, 4, codebook_dim=6),
        "simvq": SimVQ(16, 4),
        "lfq_lsb_first": LFQ(dim=4, bit_order="lsb_first"),
        "lfq_lsb_first_books": LFQ(dim=4, num_codebooks=2, bit_order="lsb_first"),
    }


@pytest.mark.parametrize("name", list(_all_quantizers()))
def test_contract_shapes_and_embed_inverse(name):
    q = _all_quantizers()[name].eval()
    z = torch.randn(2, 4, 3, 5)
    out = q(z)
    assert out.z_q.shape == z.shape and out.z_q.dtype == z.dtype
    assert out.indices.shape == (2, *q.indices_shape(3, 5))
    assert out.indices.dtype == torch.long
    valid = out.indices[out.indices >= 0]
    assert valid.min() >= 0 and valid.max() < q.codebook_size
    assert out.loss.ndim == 0 and out.perplexity.ndim == 0 and 0 < out.usage.item() <= 1
    assert q.dim == 4
    torch.testing.assert_close(q.embed(out.indices), out.z_q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["vq", "vq_groups", "vq_separate", "ema", "residual", "lfq", "projected", "simvq"])
@pytest.mark.parametrize("shape", [(2, 4, 3, 3), (2, 5, 4)], ids=["map", "sequence"])
def test_straight_through_gradient_is_identity(name, shape):
    q = _all_quantizers()[name].train()
    z = torch.randn(*shape, requires_grad=True)
    g = torch.randn(*shape)
    (q(z).z_q * g).sum().backward()
    torch.testing.assert_close(z.grad, g)


@pytest.mark.parametrize("name", list(_all_quantizers()))
def test_sequences_are_quantized_like_one_row_maps(name):
    """``[B, N, D]`` (1D tokenizers) gives the codes of the map ``[B, D, 1, N]``, indices without ``H``."""
    q = _all_quantizers()[name].eval()
    seq = torch.randn(2, 7, 4)
    out, ref = q(seq), q(rearrange(seq, "b n d -> b d 1 n"))
    assert out.z_q.shape == seq.shape and out.z_q.dtype == seq.dtype
    torch.testing.assert_close(out.z_q, rearrange(ref.z_q, "b d 1 n -> b n d"))
    assert torch.equal(out.indices, ref.indices[..., 0, :])
    assert out.indices.shape == (2, *q.indices_shape(1, 7)[:-2], 7)
    assert torch.equal(out.loss, ref.loss) and torch.equal(out.perplexity, ref.perplexity)
    assert torch.equal(q.indices(seq), out.indices)
    torch.testing.assert_close(q.embed(out.indices), out.z_q, rtol=1e-5, atol=1e-6)


def test_a_quantizer_can_opt_out_of_sequence_inputs():
    class Scales(Quantizer):  # e.g. a multi-scale quantizer whose 3-axis inputs mean something else
        sequence_inputs = False
        dim, codebook_size = 4, 2

        def forward(self, z):
            return z

        def embed(self, indices):
            return indices

    z = torch.zeros(1, 2, 3)
    assert Scales()(z) is z and Scales().embed(z) is z


@pytest.mark.parametrize("name", list(_all_quantizers()))
def test_bad_latent_raises(name):
    q = _all_quantizers()[name]
    with pytest.raises(ValueError, match="expects"):
        q(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"expects 4 channels.*got 5"):
        q(torch.randn(2, 5, 3, 3))
    with pytest.raises(ValueError, match=r"sequence \[B, N, 4\]\), got 5"):
        q(torch.randn(2, 3, 5))


@pytest.mark.parametrize("name", ["vq", "ema", "gumbel", "fsq", "lfq", "ibq", "projected", "simvq"])
def test_embed_rejects_bad_indices(name):
    q = _all_quantizers()[name]
    with pytest.raises(ValueError, match="accepted range"):
        q.embed(torch.full((1, 2, 2), q.codebook_size))
    with pytest.raises(ValueError, match="indices of shape"):
        q.embed(torch.zeros(1, 2, 2, 2, 2, dtype=torch.long))


def test_bf16_module_and_input():
    q = VectorQuantizer(32, 4).to(torch.bfloat16)
    with torch.no_grad():
        q.embedding.weight.copy_(torch.randn(32, 4))
    z = torch.randn(2, 4, 6, 6).bfloat16()
    out = q(z)
    assert out.z_q.dtype == torch.bfloat16
    expected = torch.cdist(flat(z).double(), q.embedding.weight.double()).argmin(dim=1)
    assert torch.equal(out.indices.reshape(-1), expected)


# --------------------------------------------------------------------------------------------
# VectorQuantizer


def test_vq_state_dict_keys_and_init():
    q = VectorQuantizer(512, 4)
    assert list(q.state_dict()) == ["embedding.weight"]
    assert q.embedding.weight.abs().max() <= 1 / 512
    f = VectorQuantizer(512, 8, code_dim=4)
    assert set(f.state_dict()) == {
        "embedding.weight", "project_in.weight", "project_in.bias", "project_out.weight", "project_out.bias"
    }
    assert f.embedding.weight.shape == (512, 4)


def test_vq_indices_are_brute_force_nearest():
    q = VectorQuantizer(40, 6, chunk_size=7)
    with torch.no_grad():
        q.embedding.weight.normal_()
    z = torch.randn(3, 6, 5, 7)
    out = q(z)
    expected = torch.cdist(flat(z), q.embedding.weight).argmin(dim=1)
    assert torch.equal(rearrange(out.indices, "b h w -> (b h w)"), expected)
    torch.testing.assert_close(flat(out.z_q), q.embedding.weight[expected])


@pytest.mark.parametrize("legacy", [True, False])
def test_vq_loss_placement_of_beta(legacy):
    beta = 0.3
    q = VectorQuantizer(4, 2, beta=beta, legacy=legacy)
    with torch.no_grad():
        q.embedding.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0], [3.0, -3.0]]))
    z = torch.tensor([[0.1, 0.2], [0.9, 1.4], [-2.0, 2.0], [2.0, -2.5]])  # nearest codes 0, 1, 2, 3
    z = rearrange(z, "(b h w) d -> b d h w", b=1, h=2, w=2).requires_grad_(True)
    out = q(z)
    assert out.indices.flatten().tolist() == [0, 1, 2, 3]
    diff = flat(z.detach()) - q.embedding.weight.detach()  # z - q per position
    mse = diff.pow(2).mean()
    assert out.loss.item() == pytest.approx((1 + beta) * mse.item(), rel=1e-6)  # same value either way
    out.loss.backward()
    # gradients tell the placement apart: d/dz and d/dcodebook of the two terms
    z_weight, code_weight = (1.0, beta) if legacy else (beta, 1.0)
    n = diff.numel()
    torch.testing.assert_close(flat(z.grad), z_weight * 2 * diff / n)
    torch.testing.assert_close(q.embedding.weight.grad, -code_weight * 2 * diff / n)


def test_vq_l2_factorised_indices_point_to_nearest_normalised_code():
    q = VectorQuantizer(24, 8, code_dim=3, l2_normalize=True)
    with torch.no_grad():
        q.embedding.weight.normal_()
    z = torch.randn(2, 8, 4, 4)
    out = q(z)
    assert out.z_q.shape == z.shape and out.indices.shape == (2, 4, 4)
    projected = F.normalize(q.project_in(flat(z)), dim=-1)
    codes = F.normalize(q.embedding.weight, dim=-1)
    expected = torch.cdist(projected, codes).argmin(dim=1)
    assert torch.equal(out.indices.flatten(), expected)
    assert torch.equal(expected, (projected @ codes.t()).argmax(dim=1))  # = max cosine similarity
    torch.testing.assert_close(flat(out.z_q), q.project_out(codes[expected]))


def test_vq_groups_share_one_codebook():
    q = VectorQuantizer(10, 6, groups=3)
    with torch.no_grad():
        q.embedding.weight.normal_()
    assert q.embedding.weight.shape == (10, 2)
    assert q.indices_shape(4, 5) == (3, 4, 5)
    z = torch.randn(2, 6, 4, 5)
    out = q(z)
    assert out.indices.shape == (2, 3, 4, 5)
    for g in range(3):
        part = flat(z[:, 2 * g : 2 * g + 2])
        expected = torch.cdist(part, q.embedding.weight).argmin(dim=1)
        assert torch.equal(out.indices[:, g].flatten(), expected)
    torch.testing.assert_close(q.embed(out.indices), out.z_q)
    with pytest.raises(ValueError, match="3 groups"):
        q.embed(out.indices[:, :2])


def test_vq_bad_arguments():
    with pytest.raises(ValueError, match="codebook_size"):
        VectorQuantizer(0, 4)
    with pytest.raises(ValueError, match="groups must divide"):
        VectorQuantizer(8, 4, groups=3)
    with pytest.raises(ValueError, match="chunk_size"):
        VectorQuantizer(8, 4, chunk_size=0)
    with pytest.raises(ValueError, match="beta"):
        VectorQuantizer(8, 4, beta=-1.0)


# --------------------------------------------------------------------------------------------
# EMAVectorQuantizer

CENTERS = 6.0 * torch.tensor(
    [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1], [1, 1, 1], [-1, -1, -1]],
    dtype=torch.float32,
)


def _quant_error(q: Quantizer, x: torch.Tensor) -> float:
    was_training = q.training
    q.eval()
    with torch.no_grad():
        z = as_latent(x)
        err = (q(z).z_q - z).pow(2).mean().item()
    q.train(was_training)
    return err


def test_ema_moves_codes_onto_clusters():
    q = EMAVectorQuantizer(8, 3, decay=0.9, dead_code_threshold=0.0).train()
    with torch.no_grad():  # every code starts 1.5 away from "its" blob
        q.embedding.weight.copy_(CENTERS + 1.5 * F.normalize(torch.randn(8, 3), dim=-1))
        q.embedding.embed_avg.copy_(q.embedding.weight)
    test_points = blobs(512, CENTERS)
    errors = [_quant_error(q, test_points)]
    for _ in range(40):
        q(as_latent(blobs(256, CENTERS)))
        errors.append(_quant_error(q, test_points))
    assert errors[-1] < 0.05 * errors[0]
    assert errors[10] < errors[0] and errors[-1] <= errors[10]
    dist = torch.cdist(CENTERS, q.embedding.weight)
    assert dist.min(dim=1).values.max() < 0.1  # a code sits on every blob centre
    assert not q.embedding.weight.requires_grad and list(q.parameters()) == []


def test_ema_no_updates_in_eval_and_loss_is_commitment_only():
    q = EMAVectorQuantizer(8, 3, beta=0.5).eval()
    before = {k: v.clone() for k, v in q.state_dict().items()}
    z = torch.randn(2, 3, 4, 4)
    out = q(z)
    for k, v in q.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert out.loss.item() == pytest.approx(0.5 * (out.z_q - z).pow(2).mean().item(), rel=1e-5)


def test_ema_update_matches_hand_computation():
    q = EMAVectorQuantizer(2, 1, decay=0.5, eps=1e-5, dead_code_threshold=0.0).train()
    with torch.no_grad():
        q.embedding.weight.copy_(torch.tensor([[0.0], [10.0]]))
        q.embedding.embed_avg.copy_(torch.tensor([[0.0], [10.0]]))
        q.embedding.cluster_size.copy_(torch.tensor([1.0, 1.0]))
    q(torch.tensor([1.0, 2.0, 3.0, 9.0]).reshape(1, 1, 2, 2))
    size = torch.tensor([0.5 + 0.5 * 3, 0.5 + 0.5 * 1])
    avg = torch.tensor([0.0 + 0.5 * 6, 5.0 + 0.5 * 9])
    total = size.sum()
    smoothed = (size + 1e-5) / (total + 2e-5) * total
    torch.testing.assert_close(q.embedding.cluster_size, size)
    torch.testing.assert_close(q.embedding.embed_avg[:, 0], avg)
    torch.testing.assert_close(q.embedding.weight[:, 0], avg / smoothed)


def test_ema_dead_codes_are_revived():
    q = EMAVectorQuantizer(16, 3, decay=0.8, dead_code_threshold=1.0).train()
    with torch.no_grad():  # a "trained" codebook that sits far away from the data
        q.embedding.weight.copy_(50.0 + torch.randn(16, 3))
        q.embedding.embed_avg.copy_(q.embedding.weight * 5.0)
        q.embedding.cluster_size.fill_(5.0)
    data = blobs(512, CENTERS)
    q.eval()
    usage_before = q(as_latent(data)).usage.item()
    q.train()
    for _ in range(12):  # 5 * 0.8^t < 1 after 8 steps
        q(as_latent(blobs(256, CENTERS)))
    q.eval()
    usage_after = q(as_latent(data)).usage.item()
    assert usage_before == pytest.approx(1 / 16)
    assert usage_after >= 0.5
    assert _quant_error(q, data) < 1.0
    assert (q.embedding.cluster_size > 0).all()


def test_ema_separate_codebooks_restart_and_init_from_their_own_group():
    """Group 0's latents sit near +10, group 1's near -10: each codebook learns only its own group."""
    torch.manual_seed(3)
    latents = torch.cat([10 + torch.randn(64, 3), -10 + torch.randn(64, 3)], dim=1)  # [N, (g c)]
    for init in (False, True):
        q = EMAVectorQuantizer(8, 6, groups=2, separate_codebooks=True, dead_code_threshold=1e6 * (not init),
                               kmeans_init=init).train()
        q(as_latent(latents))  # restarts every code (threshold 1e6) or k-means on the first batch
        books = q.embedding.weight.view(2, 8, 3)
        assert (books[0] > 5).all() and (books[1] < -5).all()
        out = q.eval()(as_latent(latents))
        assert out.indices.shape == (4, 2, 4, 4)
        torch.testing.assert_close(q.embed(out.indices), out.z_q)


def test_ema_kmeans_init():
    q = EMAVectorQuantizer(8, 3, kmeans_init=True, kmeans_iters=15, dead_code_threshold=0.0)
    assert not bool(q.initialized)
    data = blobs(1024, CENTERS)
    q.eval()
    q(as_latent(data))  # eval never initialises
    assert not bool(q.initialized)
    random_error = _quant_error(q, data)
    q.train()
    q(as_latent(data))
    assert bool(q.initialized)
    error = _quant_error(q, data)
    assert error < 0.25 * random_error
    assert error < 0.1 * data.var(dim=0).mean().item()
    assert "initialized" in q.state_dict()


def test_kmeans_reaches_a_fixed_point():
    data = blobs(1024, CENTERS)
    centroids = kmeans(data, 8, iters=30)
    assign = torch.cdist(data, centroids).argmin(dim=1)
    for k in assign.unique():
        torch.testing.assert_close(centroids[k], data[assign == k].mean(dim=0), rtol=1e-4, atol=1e-4)
    objective = (data - centroids[assign]).pow(2).sum(dim=1).mean()
    first_iteration = kmeans(data, 8, iters=1)
    assert objective <= (data - first_iteration[nearest_code(data, first_iteration)]).pow(2).sum(dim=1).mean()


def test_ema_state_dict_keys():
    q = EMAVectorQuantizer(8, 3)
    expected = {"embedding.weight", "embedding.cluster_size", "embedding.embed_avg", "initialized"}
    assert set(q.state_dict()) == expected


def test_ema_bad_arguments():
    with pytest.raises(ValueError, match="decay"):
        EMAVectorQuantizer(8, 3, decay=1.0)
    with pytest.raises(ValueError, match="dead_code_threshold"):
        EMAVectorQuantizer(8, 3, dead_code_threshold=-1.0)
    with pytest.raises(ValueError, match="eps"):
        EMAVectorQuantizer(8, 3, eps=0.0)


# --------------------------------------------------------------------------------------------
# GumbelQuantizer


def test_gumbel_state_dict_keys():
    q = GumbelQuantizer(32, 4, in_channels=6)
    assert list(q.state_dict()) == ["proj.weight", "proj.bias", "embed.weight"]
    assert q.state_dict()["proj.weight"].shape == (32, 6, 1, 1)
    assert q.state_dict()["embed.weight"].shape == (32, 4)


def test_gumbel_eval_is_deterministic_argmax():
    q = GumbelQuantizer(32, 4, in_channels=6).eval()
    z = torch.randn(2, 6, 3, 3)
    a, b = q(z), q(z)
    assert torch.equal(a.z_q, b.z_q) and torch.equal(a.indices, b.indices)
    assert torch.equal(a.indices, q.proj(z).argmax(dim=1))
    torch.testing.assert_close(flat(a.z_q), q.codebook.weight[a.indices.flatten()])


def test_gumbel_training_hard_gives_one_hot_rows_and_gradients():
    q = GumbelQuantizer(16, 4, temperature=0.7).train()
    z = torch.randn(2, 4, 3, 3)
    out = q(z)
    torch.testing.assert_close(flat(out.z_q), q.codebook.weight[out.indices.flatten()])
    out.z_q.sum().backward()
    assert q.proj.weight.grad is not None and q.proj.weight.grad.abs().sum() > 0
    q.temperature = 0.1
    assert q.temperature == 0.1
    with pytest.raises(ValueError, match="temperature"):
        q.temperature = 0.0


def test_gumbel_kl_matches_hand_computation():
    q = GumbelQuantizer(3, 2, kl_weight=0.5)
    logits = torch.tensor([2.0, 0.0, -1.0])
    with torch.no_grad():
        q.proj.weight.zero_()
        q.proj.bias.copy_(logits)
    out = q.eval()(torch.randn(1, 2, 2, 2))
    p = torch.exp(logits) / torch.exp(logits).sum()
    kl = sum(pi * math.log(pi * 3) for pi in p.tolist())
    assert out.loss.item() == pytest.approx(0.5 * kl, rel=1e-5)
    assert (out.indices == 0).all()


# --------------------------------------------------------------------------------------------
# ResidualVectorQuantizer


def test_residual_error_falls_with_depth():
    q = ResidualVectorQuantizer(64, 4, depth=4, shared_codebook=True).eval()
    with torch.no_grad():  # codes at several scales, and a zero code, so more levels never hurt
        scales = torch.logspace(1, -2, 64).unsqueeze(1)
        q.embedding.weight.copy_(torch.randn(64, 4) * scales)
        q.embedding.weight[0].zero_()
    z = 2 * torch.randn(4, 4, 6, 6)
    out = q(z)
    assert out.indices.shape == (4, 4, 6, 6) and q.indices_shape(6, 6) == (4, 6, 6)
    errors = [(z - q.embed(out.indices[:, :d])).norm().item() for d in range(1, 5)]
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    torch.testing.assert_close(q.embed(out.indices), out.z_q)


def test_residual_shared_vs_unshared_parameters():
    shared = ResidualVectorQuantizer(32, 4, depth=3, shared_codebook=True)
    unshared = ResidualVectorQuantizer(32, 4, depth=3, shared_codebook=False)
    assert {k: tuple(v.shape) for k, v in shared.state_dict().items()} == {"embedding.weight": (32, 4)}
    assert {k: tuple(v.shape) for k, v in unshared.state_dict().items()} == {
        f"embeddings.{i}.weight": (32, 4) for i in range(3)
    }
    z = torch.randn(2, 4, 3, 3)
    out = unshared.eval()(z)
    torch.testing.assert_close(unshared.embed(out.indices), out.z_q)


def test_residual_loss_matches_hand_computation():
    q = ResidualVectorQuantizer(8, 2, depth=2, beta=0.4, shared_codebook=False)
    with torch.no_grad():
        for book in q.embeddings:
            book.weight.normal_()
    z = torch.randn(1, 2, 3, 3)
    out = q(z)
    x = flat(z)
    r, total, book_terms, commit_terms = x, torch.zeros_like(x), [], []
    for level in range(2):
        code = q.embeddings[level].weight[torch.cdist(r, q.embeddings[level].weight).argmin(dim=1)]
        book_terms.append((code - r).pow(2).mean())
        r, total = r - code, total + code
        commit_terms.append((x - total).pow(2).mean())
    expected = sum(book_terms) / 2 + 0.4 * sum(commit_terms) / 2
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_residual_quantize_dropout():
    q = ResidualVectorQuantizer(16, 4, depth=4, quantize_dropout=True).train()
    z = torch.randn(2, 4, 3, 3)
    kept_counts = set()
    for _ in range(30):
        out = q(z)
        kept = (out.indices[:, :, 0, 0] >= 0).sum(dim=1)
        assert (kept == kept[0]).all()  # the same number of levels for the whole batch
        k = int(kept[0])
        assert (out.indices[:, :k] >= 0).all() and (out.indices[:, k:] == -1).all()
        torch.testing.assert_close(q.embed(out.indices), out.z_q)
        torch.testing.assert_close(q.embed(out.indices[:, :k]), out.z_q)
        kept_counts.add(k)
    assert kept_counts == {1, 2, 3, 4}
    assert (q.eval()(z).indices >= 0).all()  # no dropout in eval


def test_residual_embed_bad_levels():
    q = ResidualVectorQuantizer(16, 4, depth=2)
    with pytest.raises(ValueError, match="levels"):
        q.embed(torch.zeros(1, 3, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="accepted range"):
        q.embed(torch.full((1, 2, 2, 2), -2))


# --------------------------------------------------------------------------------------------
# FSQ and LFQ


def test_fsq_round_trip_over_whole_codebook():
    q = FSQ((8, 5, 5, 3))
    assert q.codebook_size == 8 * 5 * 5 * 3 and q.dim == 4
    indices = torch.arange(q.codebook_size).reshape(1, 1, -1)
    codes = q.embed(indices)
    assert torch.equal(q.codes_to_indices(codes), indices)
    assert len({tuple(c) for c in flat(codes).tolist()}) == q.codebook_size


def test_fsq_values_on_the_grid():
    levels = (8, 5, 4, 3)
    q = FSQ(levels, dim=4)
    z = (3 * torch.randn(4, 4, 8, 8)).requires_grad_(True)
    out = q(z)
    assert out.loss.item() == 0.0
    for i, level in enumerate(levels):
        values = torch.unique(out.z_q[:, i].detach())
        grid = (torch.arange(level) - level // 2) / (level // 2)
        assert torch.isin(values, grid).all()
        assert len(values) == level  # every level is reachable
    assert torch.equal(q.codes_to_indices(out.z_q.detach()), out.indices)
    out.z_q.sum().backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_fsq_bad_arguments():
    with pytest.raises(ValueError, match="dim == len"):
        FSQ((8, 5, 5), dim=4)
    with pytest.raises(ValueError, match="levels"):
        FSQ((8, 1))


def test_lfq_round_trip_and_bits():
    q = LFQ(codebook_size=2**5)
    assert q.dim == 5 and q.codebook_size == 32
    indices = torch.arange(32).reshape(1, 4, 8)
    codes = q.embed(indices)
    assert set(codes.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(q(codes).indices, indices)
    assert torch.equal(q.codes_to_indices(codes), indices)
    # channel 0 is the most significant bit
    z = torch.tensor([1.0, -1.0, -1.0, -1.0, 1.0]).reshape(1, 5, 1, 1)
    assert q(z).indices.item() == 0b10001


@pytest.mark.parametrize("spherical", [False, True])
def test_lfq_bit_order_applies_to_each_codebook(spherical):
    """``bit_order`` with ``num_codebooks``: each codebook's ``bits`` channels form its own id, channel
    ``j`` of codebook ``c`` being bit ``j`` (lsb_first) or bit ``bits - 1 - j`` (msb_first)."""
    z = torch.tensor([1.0, -1.0, -1.0, 1.0, 1.0, -1.0]).view(1, 6, 1, 1)  # codebook 0: + - -, codebook 1: + + -
    lsb = LFQ(dim=6, num_codebooks=2, bit_order="lsb_first", spherical=spherical)
    msb = LFQ(dim=6, num_codebooks=2, spherical=spherical)
    assert lsb(z).indices.flatten().tolist() == [0b001, 0b011]
    assert msb(z).indices.flatten().tolist() == [0b100, 0b110]
    ids = torch.randint(0, 8, (2, 2, 3, 3))
    codes = lsb.embed(ids)
    assert torch.equal(lsb(codes).indices, ids) and torch.equal(lsb.codes_to_indices(codes), ids)
    # the same code in both orders: the ids are the bit-reversed ones
    reverse = torch.tensor([int(f"{i:03b}"[::-1], 2) for i in range(8)])
    assert torch.equal(msb.codes_to_indices(codes), reverse[ids])
    assert LFQConfig(num_codebooks=2, bit_order="lsb_first").build(6).bit_order == "lsb_first"


def test_lfq_loss_matches_brute_force_entropy():
    q = LFQ(dim=3, entropy_weight=0.7, commitment_weight=0.2, inv_temperature=0.5)
    z = torch.randn(2, 3, 2, 2)
    out = q(z)
    x = flat(z)
    all_codes = q.embed(torch.arange(8).reshape(1, 1, 8))[0, :, 0].t()  # [8, 3]
    probs = F.softmax(2 * 0.5 * x @ all_codes.t(), dim=-1)  # exact distribution over all codes
    sample_entropy = -(probs * probs.log()).sum(dim=-1).mean()
    bit_p = torch.sigmoid(4 * 0.5 * x).mean(dim=0)
    codebook_entropy = -(bit_p * bit_p.log() + (1 - bit_p) * (1 - bit_p).log()).sum()
    commitment = (x - torch.where(x > 0, 1.0, -1.0)).pow(2).mean()
    expected = 0.2 * commitment + 0.7 * (sample_entropy - codebook_entropy)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_lfq_bad_arguments():
    with pytest.raises(ValueError, match="power of two"):
        LFQ(codebook_size=6)
    with pytest.raises(ValueError, match="2 \\*\\* dim"):
        LFQ(codebook_size=16, dim=5)
    with pytest.raises(ValueError, match="dim or codebook_size"):
        LFQ()


# --------------------------------------------------------------------------------------------
# build_quantizer


@pytest.mark.parametrize(
    "config, cls, size",
    [
        (VQConfig(codebook_size=32, groups=2, beta=0.5, legacy=False), VectorQuantizer, 32),
        (EMAConfig(codebook_size=32, decay=0.9, kmeans_init=True), EMAVectorQuantizer, 32),
        (GumbelConfig(codebook_size=32, temperature=0.5, kl_weight=1e-8), GumbelQuantizer, 32),
        (ResidualConfig(codebook_size=32, depth=3, shared_codebook=False), ResidualVectorQuantizer, 32),
        (FSQConfig(levels=(4, 4, 3, 2)), FSQ, 96),
        (LFQConfig(entropy_weight=0.2), LFQ, 16),
    ],
)
def test_build_quantizer(config, cls, size):
    q = build_quantizer(config, 4)
    assert type(q) is cls and q.dim == 4 and q.codebook_size == size
    for name in ("beta", "legacy", "groups", "decay", "kmeans_init", "temperature", "kl_weight", "depth",
                 "shared_codebook", "levels", "entropy_weight"):
        if hasattr(config, name):
            assert getattr(q, name) == getattr(config, name), name
    out = q.eval()(torch.randn(1, 4, 2, 2))
    assert out.indices.shape == (1, *q.indices_shape(2, 2))


def test_build_quantizer_rejects_unknown_config():
    with pytest.raises(ValueError, match="VQConfig"):
        build_quantizer({"kind": "vq"}, 4)
    with pytest.raises(ValueError, match="dim == len"):
        build_quantizer(FSQConfig(levels=(8, 5, 5)), 4)
