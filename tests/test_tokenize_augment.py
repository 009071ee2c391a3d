"""movq-tokenize --augment flip | ten-crop: the views equal LlamaGen's (ADM centre crop, then torchvision's
TenCrop / a horizontal flip, pixel-identical), every stored view equals codec.encode of that view, the
[n_aug, h, w] layout is recorded and checked, and TokenDataset picks one view per epoch, deterministically."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import movq
from helpers import TOKENIZE_FAST, TOKENIZE_MODEL, TOKENIZE_RES, bench_photos, smooth_image, token_files
from movq.image_files import Augment, center_crop_arr, open_rgb, ten_crop
from movq.tokenize.cli import EXIT_ERROR, main
from movq.tokenize.dataset import TokenDataset, collate_items

GOOD = ["a.jpg", "b.png", "c_gray.png", "d_small.png", "sub/e.webp"]


def adm_reference(image: Image.Image, size: int) -> np.ndarray:
    """ADM's centre crop (guided-diffusion's image_datasets.center_crop_arr), re-derived from its
    description: BOX-halve while the short side is >= 2 x size, bicubic so the short side is size
    (each side rounded), then the centre square with the offsets rounded down; as an HWC array."""
    im = image
    while im.width >= 2 * size and im.height >= 2 * size:
        im = im.resize((im.width // 2, im.height // 2), Image.BOX)
    factor = size / min(im.width, im.height)
    im = im.resize((round(im.width * factor), round(im.height * factor)), Image.BICUBIC)
    pixels = np.array(im)
    dy, dx = (pixels.shape[0] - size) // 2, (pixels.shape[1] - size) // 2
    return pixels[dy:dy + size, dx:dx + size]


SIZES = [(80, 60), (50, 70), (24, 40), (300, 97), (35, 35), (64, 200)]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("target", [32, 35])
def test_center_crop_arr_equals_adm(size, target):
    image = smooth_image(sum(size), size)
    out = center_crop_arr(image, target)
    assert out.size == (target, target) and out.mode == "RGB"
    assert np.array_equal(np.asarray(out), adm_reference(image, target))


def test_center_crop_arr_on_real_photos():
    for path in bench_photos():
        image = open_rgb(path)
        for target in (64, 70):  # several BOX halvings of a large photo
            assert np.array_equal(np.asarray(center_crop_arr(image, target)), adm_reference(image, target)), path


@pytest.mark.parametrize("crop_range", [1.1, 1.05, 1.0, 1.5])
@pytest.mark.parametrize("size", [(80, 60), (24, 40), (300, 97)])
def test_ten_crop_views_equal_torchvision_ten_crop_after_the_adm_crop(size, crop_range):
    from torchvision import transforms

    image = smooth_image(size[0], size)
    views, upscaled = Augment("ten-crop", crop_range)(image, TOKENIZE_RES)
    crop = int(TOKENIZE_RES * crop_range)  # LlamaGen's int(image_size * crop_range)
    assert views.shape == (10, 3, TOKENIZE_RES, TOKENIZE_RES) and views.dtype == torch.uint8
    assert upscaled == (min(size) < crop)
    reference = transforms.TenCrop(TOKENIZE_RES)(Image.fromarray(adm_reference(image, crop)))
    for k, (view, ref) in enumerate(zip(views, reference)):
        assert np.array_equal(view.permute(1, 2, 0).numpy(), np.asarray(ref)), k
    # and ten_crop alone is TenCrop on any image, odd margins included (centre offsets round half to even)
    for side in (33, 35, 37, 40):
        base = smooth_image(side, (side + 3, side))
        ours = ten_crop(base, 32)
        theirs = transforms.TenCrop(32)(base)
        assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(ours, theirs, strict=True))


def test_flip_views_are_the_adm_crop_and_its_mirror():
    image = smooth_image(7, (80, 60))
    views, _ = Augment("flip")(image, TOKENIZE_RES)
    base = adm_reference(image, TOKENIZE_RES)
    assert views.shape == (2, 3, TOKENIZE_RES, TOKENIZE_RES)
    assert np.array_equal(views[0].permute(1, 2, 0).numpy(), base)
    assert np.array_equal(views[1].permute(1, 2, 0).numpy(), base[:, ::-1])


def test_augment_refuses_bad_settings():
    with pytest.raises(ValueError, match="augment must be one of"):
        Augment("rotate")
    with pytest.raises(ValueError, match=r"crop_range must be a number in \[1, 4\]"):
        Augment("ten-crop", 0.9)


# ------------------------------------------------------------------ movq-tokenize --augment


@pytest.fixture(scope="module")
def augmented_runs(token_data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("aug")
    runs = {}
    for mode in ("flip", "ten-crop"):
        out = root / mode
        args = ["--model", TOKENIZE_MODEL, "--data", str(token_data_dir), "--out", str(out), "--augment", mode, *TOKENIZE_FAST]
        assert main(args) == 0
        runs[mode] = out
    return runs


@pytest.mark.parametrize("mode", ["flip", "ten-crop"])
def test_each_stored_view_equals_codec_encode_of_that_view(augmented_runs, token_data_dir, mode):
    codec = movq.load(TOKENIZE_MODEL)
    out = augmented_runs[mode]
    ds = TokenDataset(out)
    n_aug = {"flip": 2, "ten-crop": 10}[mode]
    assert [ds[i]["source"] for i in range(len(ds))] == GOOD
    for i in range(len(ds)):
        views, _ = Augment(mode, 1.1)(open_rgb(token_data_dir / ds[i]["source"]), TOKENIZE_RES)
        expected = codec.encode(views)
        assert ds[i]["tokens"].shape == (n_aug, 4, 4) and torch.equal(ds[i]["tokens"], expected), ds[i]["source"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["augment"] == {"mode": mode, "crop_range": 1.1 if mode == "ten-crop" else None, "n_aug": n_aug}
    assert meta["item_shape"] == [n_aug, 4, 4] and "ADM centre crop" in meta["preprocessing"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_aug"] == n_aug and summary["tokens"] == 5 * n_aug * 16
    index = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert all(row["shape"] == [n_aug, 4, 4] for row in index)


def test_token_dataset_picks_one_view_per_epoch_deterministically(augmented_runs):
    out = augmented_runs["ten-crop"]
    full = TokenDataset(out)
    fixed = TokenDataset(out, augmentation=3)
    assert all(torch.equal(fixed[i]["tokens"], full[i]["tokens"][3]) for i in range(len(full)))
    picks = {}
    for epoch in range(6):
        ds = TokenDataset(out, augmentation="random", seed=1)
        ds.set_epoch(epoch)
        again = TokenDataset(out, augmentation="random", seed=1)
        again.set_epoch(epoch)
        for i in range(len(ds)):
            view = ds.view_of(i)
            assert 0 <= view < 10 and view == again.view_of(i)
            assert torch.equal(ds[i]["tokens"], full[i]["tokens"][view]) and ds[i]["view"] == view
            picks.setdefault(i, set()).add(view)
    assert all(len(v) > 1 for v in picks.values())  # the view changes with the epoch
    other_seed = TokenDataset(out, augmentation="random", seed=2)
    assert [other_seed.view_of(i) for i in range(5)] != [TokenDataset(out, augmentation="random", seed=1).view_of(i)
                                                         for i in range(5)]
    batch = collate_items([ds[0], ds[1]])
    assert batch["tokens"].shape == (2, 4, 4)
    with pytest.raises(ValueError, match=r"augmentation must be 'all', 'random' or a view in \[0, 10\), got 10"):
        TokenDataset(out, augmentation=10)


def test_a_shard_with_another_view_count_is_refused(augmented_runs, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from movq.tokenize.shards import shard_paths

    out = tmp_path / "copy"
    shutil.copytree(augmented_runs["flip"], out)
    path = shard_paths(out, 0)[0]
    with safe_open(str(path), framework="pt") as f:
        metadata, old = f.metadata(), f.get_tensor("tokens")
    save_file({"tokens": old[:, :1].contiguous()}, str(path), metadata=metadata)
    with pytest.raises(ValueError, match=r"holds items of shape \[1, 4, 4\] \(1 views\), but meta.json records "
                                         r"\[2, 4, 4\] \(n_aug 2: \[n_aug, \.\.\.\]\)"):
        TokenDataset(out)[0]


def test_augment_is_part_of_the_run_identity(augmented_runs, token_data_dir, capsys):
    out = augmented_runs["flip"]
    args = ["--model", TOKENIZE_MODEL, "--data", str(token_data_dir), "--out", str(out), *TOKENIZE_FAST]
    assert main(args) == EXIT_ERROR
    assert "augment: {'mode': 'flip'" in capsys.readouterr().err
    assert main([*args, "--augment", "flip"]) == 0  # the same settings resume (every shard finished)
    assert "3 of 3 shards already finished" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--augment", "ten-crop", "--crop-range", "0.5"], "--crop-range must be a number in [1, 4], got 0.5"),
    (["--crop-range", "1.2"], "--crop-range 1.2 needs --augment ten-crop"),
    (["--augment", "ten-crop", "--resolution", "4096", "--batch-size", "64"],
     "--resolution 4096 x --batch-size 64 x 10 views (--augment ten-crop) needs at least"),
])
def test_augment_flags_are_checked_before_any_work(token_data_dir, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    argv = ["--model", TOKENIZE_MODEL, "--data", str(token_data_dir), "--out", str(out), *TOKENIZE_FAST, *args]
    assert main(argv) == EXIT_ERROR  # the later flag wins
    err = capsys.readouterr().err
    assert err.startswith("movq-tokenize: error: ") and message in err and err.count("\n") == 1, err
    assert not (out / "meta.json").exists()


def test_an_augmented_run_resumes_byte_identically(augmented_runs, token_data_dir, tmp_path):
    from movq.tokenize.shards import shard_paths

    out = tmp_path / "copy"
    shutil.copytree(augmented_runs["ten-crop"], out)
    shard_paths(out, 1)[0].unlink()
    args = ["--model", TOKENIZE_MODEL, "--data", str(token_data_dir), "--out", str(out), "--augment", "ten-crop"]
    assert main([*args, *TOKENIZE_FAST, "--batch-size", "1"]) == 0  # batch size does not change the bytes
    assert token_files(out) == token_files(augmented_runs["ten-crop"])


def test_augmented_latents_are_stored_per_view(token_data_dir, tmp_path):
    out = tmp_path / "lat"
    args = ["--model", TOKENIZE_MODEL, "--data", str(token_data_dir), "--out", str(out), "--latents", "--augment", "flip"]
    assert main([*args, *TOKENIZE_FAST]) == 0
    codec = movq.load(TOKENIZE_MODEL)
    ds = TokenDataset(out)
    views, _ = Augment("flip")(open_rgb(token_data_dir / ds[1]["source"]), TOKENIZE_RES)
    with torch.no_grad():
        expected = codec.encode_latents(views).half()
    assert ds[1]["latents"].shape == (2, codec.config.embed_dim, 4, 4) and torch.equal(ds[1]["latents"], expected)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_aug"] == 2 and len(summary["std"]) == codec.config.embed_dim
