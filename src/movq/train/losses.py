"""Losses of the SBER-MoVQGAN recipe (seed 001) and the PatchGAN discriminator.

``L = w_vq L_VQ + w_adv L_adv + w_perc L_perc + w_l2 L_2 + w_nll L_NLL (+ w_l1 L_1)``,
``L_NLL = mean(nll_perc * L_perc + nll_l2 * L_2)`` (per pixel, the per-image LPIPS broadcast over
the pixels), so with the defaults ``L_NLL = 0.1 L_perc + L_2`` numerically: the recipe counts
the reconstruction terms twice, which is what the formula says. L_adv is the hinge generator
loss ``-mean(D(x_hat))``; the discriminator gets ``0.5 (mean relu(1 - D(x)) + mean relu(1 + D(x_hat)))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from movq.modules.norm import NUM_GROUPS


@dataclass
class LossWeights:
    """Weights of the generator loss terms (see the module docstring)."""

    vq: float = 1.0
    adv: float = 0.1
    perc: float = 0.1
    l2: float = 1.0
    nll: float = 1.0
    l1: float = 0.0
    nll_perc: float = 0.1
    nll_l2: float = 1.0


def reconstruction_terms(x: Tensor, x_hat: Tensor, perc: Tensor | None, w: LossWeights) -> dict[str, Tensor]:
    """``l2``, ``l1``, ``perc`` and ``nll`` (scalars, float32) for images ``[B, 3, H, W]`` in ``[-1, 1]``.

    ``perc`` is the per-image perceptual distance ``[B]`` (None: perceptual terms are 0).
    """
    x, x_hat = x.float(), x_hat.float()
    sq = (x_hat - x).pow(2)
    perc_map = perc.float().view(-1, 1, 1, 1) if perc is not None else torch.zeros((), device=x.device)
    nll = (w.nll_perc * perc_map + w.nll_l2 * sq).mean()
    return {
        "l2": sq.mean(),
        "l1": (x_hat - x).abs().mean(),
        "perc": perc.float().mean() if perc is not None else torch.zeros((), device=x.device),
        "nll": nll,
    }


class CodecLoss:
    """The generator objective of the recipe (module docstring) in one place.

    ``loss(x, x_hat, vq, perc, logits_fake, last_layer)`` takes images ``[B, 3, H, W]`` in
    ``[-1, 1]``, the quantizer loss (scalar), the per-image perceptual distance ``[B]`` (or None),
    and, once the GAN term is on, the discriminator's logits on ``x_hat`` plus the decoder's last
    weight (for the adaptive weight). Returns float32 scalars ``l2``, ``l1``, ``perc``, ``nll``,
    ``vq``, ``adv``, ``adv_weight`` and their weighted sum ``loss``.
    """

    def __init__(self, weights: LossWeights, adaptive: bool = False) -> None:
        self.w, self.adaptive = weights, adaptive

    def __call__(
        self, x: Tensor, x_hat: Tensor, vq: Tensor, perc: Tensor | None,
        logits_fake: Tensor | None = None, last_layer: Tensor | None = None,
    ) -> dict[str, Tensor]:
        w = self.w
        terms = reconstruction_terms(x, x_hat, perc, w)
        zero = torch.zeros((), device=x.device)
        terms["vq"] = vq.float()
        terms["adv"], terms["adv_weight"] = zero, zero
        if logits_fake is not None:
            terms["adv"] = generator_adv_loss(logits_fake)
            if self.adaptive:
                if last_layer is None:
                    raise ValueError("the adaptive GAN weight needs the decoder's last layer weight")
                terms["adv_weight"] = adaptive_weight(terms["nll"], terms["adv"], last_layer)
            else:
                terms["adv_weight"] = torch.ones((), device=x.device)
        terms["loss"] = (
            w.vq * terms["vq"] + w.adv * terms["adv_weight"] * terms["adv"] + w.perc * terms["perc"]
            + w.l2 * terms["l2"] + w.nll * terms["nll"] + w.l1 * terms["l1"]
        )
        return terms


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """Hinge discriminator loss ``0.5 * (mean(relu(1 - real)) + mean(relu(1 + fake)))``."""
    return 0.5 * (F.relu(1.0 - logits_real.float()).mean() + F.relu(1.0 + logits_fake.float()).mean())


def generator_adv_loss(logits_fake: Tensor) -> Tensor:
    """Hinge generator loss ``-mean(D(x_hat))``."""
    return -logits_fake.float().mean()


def adaptive_weight(nll: Tensor, g_loss: Tensor, last_layer: Tensor, max_weight: float = 1e4) -> Tensor:
    """taming's adaptive GAN weight ``|grad nll| / (|grad g_loss| + 1e-4)`` at ``last_layer``, clamped, detached."""
    nll_grad = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = nll_grad.norm() / (g_grad.norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()


class NLayerDiscriminator(nn.Module):
    """PatchGAN discriminator (pix2pix / taming layout): images ``[B, 3, H, W]`` in ``[-1, 1]`` ->
    logits ``[B, 1, H', W']`` (``H' = H/8 - 2`` for 3 layers), one real/fake score per patch.

    conv4x4/2 + LeakyReLU(0.2), then ``n_layers - 1`` conv4x4/2 + norm + LeakyReLU with
    ``ndf * min(2^n, 8)`` channels, one conv4x4/1 + norm + LeakyReLU, and a conv4x4/1 to 1 channel.
    ``norm="batch"`` (taming default) or ``"group"`` (:data:`~movq.modules.norm.NUM_GROUPS` groups, as in the codec; batch-size independent).
    Weights init N(0, 0.02), norm scales N(1, 0.02).
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "batch") -> None:
        super().__init__()

        def make_norm(c: int) -> nn.Module:
            return nn.BatchNorm2d(c) if norm == "batch" else nn.GroupNorm(min(NUM_GROUPS, c), c)

        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=False), make_norm(ndf * mult)]
            layers += [nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)
