"""Regression tests for the hostile-input audit (its full set of cases: ``test_hostile_files.py``,
``test_hostile_codec.py``, ``test_hostile_cli.py``).

One test per problem the audit found and fixed: each hostile file, argument or input gets a clear
``ValueError`` / ``TypeError`` / ``FileNotFoundError`` (or a one-line CLI error), never a raw
traceback, never code execution, never a silently wrong result.
"""

from __future__ import annotations

import io
import json
import os
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import movq
from helpers import RunsCode, save_as_foreign_module
from movq import Codec, CodecConfig
from movq.config import EMAConfig, VQConfig
from movq.hub.safe_load import CheckpointReadError, UnsafeCheckpointError, load_state_file
from movq.memory_budget import MemoryBudgetError
from movq.strict import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(**over) -> Codec:
    torch.manual_seed(0)
    base = dict(
        ch=32, ch_mult=(1, 2), attn_resolutions=(), resolution=16, quantizer=VQConfig(codebook_size=64)
    )
    return Codec(CodecConfig(**{**base, **over})).eval()


def _one_line(err: str, prog: str) -> str:
    err = err.strip()
    assert err.startswith(f"{prog}: error: ") and "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# ------------------------------------------------------------------ files that could run code


def test_unsafe_checkpoint_error_is_also_a_value_error(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "init.ckpt"
    torch.save({"state_dict": {"x": RunsCode(marker)}}, path)
    with pytest.raises(ValueError, match="refusing to load .*init.ckpt") as info:
        movq.load(path)
    assert isinstance(info.value, UnsafeCheckpointError) and not marker.exists()


def test_movq_train_init_with_a_malicious_checkpoint_is_one_line(tmp_path, capsys):
    from movq.train.cli import main as train_main

    marker, path = tmp_path / "pwned", tmp_path / "init.ckpt"
    torch.save({"state_dict": {"x": RunsCode(marker)}}, path)
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (16, 16)).save(data / "a.png")
    code = train_main(
        [
            "--data",
            str(data),
            "--out",
            str(tmp_path / "run"),
            "--init",
            str(path),
            "--device",
            "cpu",
            "--num-workers",
            "0",
            "--no-progress",
        ]
    )
    assert (
        code == 2 and "init.ckpt" in _one_line(capsys.readouterr().err, "movq-train") and not marker.exists()
    )


@pytest.mark.parametrize("reader", ["lpips", "inception"])
@pytest.mark.parametrize("content", ["malicious", "garbage"])
def test_metric_weight_files_are_read_safely_with_one_line_errors(tmp_path, reader, content):
    from movq.metrics.inception import load_inception_file
    from movq.metrics.lpips import load_lpips

    marker, path = tmp_path / "pwned", tmp_path / "weights.pth"
    if content == "malicious":
        torch.save({"x": RunsCode(marker)}, path)
    else:
        path.write_bytes(b"hello, not weights\n" * 20)
    with pytest.raises(ValueError, match="weights.pth") as info:
        load_lpips("alex", path) if reader == "lpips" else load_inception_file(path)
    assert len(str(info.value).splitlines()) == 1 and not marker.exists()


def test_corrupt_torchscript_inception_file_names_the_file(tmp_path):
    import zipfile

    from movq.metrics.inception import load_inception_file

    path = tmp_path / "script.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/constants.pkl", b"junk")
        archive.writestr("archive/data.pkl", b"junk")
    with pytest.raises(ValueError, match="script.pt"):
        load_inception_file(path)


def test_dalle_pickle_whose_module_contains_itself(tmp_path):
    from movq.dvae import DVAE, DVAEConfig

    torch.manual_seed(0)
    model = DVAE(DVAEConfig(n_hid=16, n_init=8, vocab_size=32))
    for part, module in (("encoder", model.encoder), ("decoder", model.decoder)):
        module.blocks._modules["loop"] = module
        save_as_foreign_module(module, f"dall_e_loop.{part}", part.title(), tmp_path / f"{part}.pkl")
    with pytest.raises(CheckpointReadError, match="encoder.pkl.*refers to itself"):
        movq.load(tmp_path)


# ------------------------------------------------------------------ corrupt / wrong-type files


@pytest.mark.parametrize("content", [b"hello, I am not a checkpoint\n" * 20, b"junk"])
def test_garbage_checkpoint_files_name_the_file(tmp_path, content):
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointReadError, match="model.pth"):
        load_state_file(path)


def test_checkpoint_with_non_string_keys(tmp_path):
    path = tmp_path / "model.ckpt"
    torch.save({1: torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="model.ckpt.*keys .* are not strings"):
        movq.load(path)


def test_checkpoint_with_nan_weights_is_refused(tmp_path):
    codec = _tiny()
    state = codec.state_dict()
    state["decoder.conv_out.weight"] = torch.full_like(state["decoder.conv_out.weight"], float("nan"))
    torch.save(state, tmp_path / "model.pt")
    with pytest.raises(ValueError, match=r"model.pt.*NaN or inf.*decoder.conv_out.weight"):
        movq.load(tmp_path / "model.pt")


def test_deeply_nested_config_json(tmp_path):
    _tiny().save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match="config.json nests JSON too deeply"):
        movq.load(tmp_path)


@pytest.mark.parametrize(
    ("field", "value"),
    [("ch", 2**24), ("quantizer", {"kind": "vq", "codebook_size": 2**40})],
)
def test_huge_config_is_refused_before_allocating(tmp_path, field, value):
    _tiny().save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data[field] = value
    (tmp_path / "config.json").write_text(json.dumps(data))
    for pretrained in (False, True):
        with pytest.raises(ValueError, match=r"config .* needs at least .* GiB"):
            movq.load(tmp_path, pretrained=pretrained)


def test_huge_dvae_config_is_refused_before_allocating(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "dalle-dvae", "n_hid": 2**22}))
    with pytest.raises(ValueError, match=r"config.json: the dVAE config .* needs at least"):
        movq.load(tmp_path, pretrained=False)


@pytest.mark.parametrize(
    ("architecture", "field", "value", "accepted"),
    [
        ("codec", "num_res_blocks", 100_000_000, r"an int in \[1, 64\]"),
        ("codec", "ch_mult", [1] * 1_000_000, "a list of at most 16 items"),
        ("dvae", "n_blk_per_group", 100_000_000, r"an int in \[1, 64\]"),
        ("dvae", "group_count", 1_000_000, r"an int in \[1, 16\]"),
    ],
)
def test_huge_structure_counts_are_refused_at_once(tmp_path, architecture, field, value, accepted):
    """10**8 residual blocks or 10**6 levels in a config.json: a ConfigError naming the file, the field
    and the bound while the file is read, not after building the network (even on the meta device)."""
    if architecture == "codec":
        _tiny().save_pretrained(tmp_path)
        data = json.loads((tmp_path / "config.json").read_text())
    else:
        data = {"architecture": "dalle-dvae"}
    data[field] = value
    (tmp_path / "config.json").write_text(json.dumps(data))
    start = time.monotonic()
    with pytest.raises(ConfigError, match=rf"field '{field}' in .*config.json: expected {accepted}, got "):
        movq.load(tmp_path, pretrained=False)
    assert time.monotonic() - start < 30  # a loose bound: building such a network takes hours


def test_parameter_estimates_stay_below_the_real_sizes():
    from movq.codec import parameter_bytes
    from movq.dvae import DVAE, DVAEConfig

    def size(model):  # the state dict in float32, plus the buffers it leaves out (LFQ's bit weights)
        state = model.state_dict()
        extra = [b for name, b in model.named_buffers() if name not in state]
        return sum(v.numel() * 4 for v in state.values()) + sum(b.numel() * b.element_size() for b in extra)

    for config in [
        *movq.PRESETS.values(),
        CodecConfig(ch=32, ch_mult=(1,), num_res_blocks=1, attn_resolutions=()),
    ]:
        with torch.device("meta"):
            assert parameter_bytes(config) <= size(Codec(config)), config.name
    for config in (
        DVAEConfig(),
        DVAEConfig(n_hid=4, n_init=1, vocab_size=2, group_count=1, n_blk_per_group=1),
    ):
        with torch.device("meta"):
            assert parameter_bytes(config) <= size(DVAE(config))


_VQ = {
    "_class_name": "VQModel",
    "block_out_channels": [32, 64],
    "down_block_types": ["DownEncoderBlock2D"] * 2,
    "up_block_types": ["UpDecoderBlock2D"] * 2,
    "latent_channels": 4,
    "num_vq_embeddings": 64,
}


@pytest.mark.parametrize(
    "change",
    [
        {"block_out_channels": [], "down_block_types": [], "up_block_types": []},
        {
            "block_out_channels": [0],
            "down_block_types": ["DownEncoderBlock2D"],
            "up_block_types": ["UpDecoderBlock2D"],
        },
        {"layers_per_block": -1},
        {"num_vq_embeddings": 0},
        {"latent_channels": 0},
    ],
)
def test_bad_diffusers_configs_name_the_file(tmp_path, change):
    (tmp_path / "config.json").write_text(json.dumps({**_VQ, **change}))
    (tmp_path / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match="config.json is not a usable diffusers VQModel config"):
        movq.load(tmp_path, pretrained=False)


def test_bad_diffusion_json_names_the_file(tmp_path):
    from movq.diffusion import GaussianDiffusion

    (tmp_path / "diffusion.json").write_text("{nope")
    with pytest.raises(ConfigError, match="diffusion.json is not valid JSON"):
        GaussianDiffusion.from_pretrained(tmp_path)


def test_extreme_aspect_ratio_is_resized_with_bounded_memory(tmp_path):
    from movq.image_files import load_preprocessed, resize_center_crop

    Image.new("RGB", (1, 100_000), (10, 120, 250)).save(tmp_path / "strip.png")
    pixels, upscaled = load_preprocessed(tmp_path / "strip.png", 256)  # a full upscale would need 19.6 GB
    assert (
        upscaled and tuple(pixels.shape) == (3, 256, 256) and pixels[:, 128, 128].tolist() == [10, 120, 250]
    )
    # ordinary images keep the exact previous pixels (recorded benchmark numbers do not move)
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    reference = photo.resize((341, 256), Image.Resampling.BICUBIC, reducing_gap=None).crop((42, 0, 298, 256))
    assert np.array_equal(np.asarray(resize_center_crop(photo, 256)[0]), np.asarray(reference))


# ------------------------------------------------------------------ API edge cases


def test_lazily_opened_truncated_image_is_a_value_error(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        buffer, "JPEG", quality=95
    )
    (tmp_path / "cut.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 2 // 3])
    with pytest.raises(ValueError, match="cut.jpg.*truncated"):
        _tiny().encode(Image.open(tmp_path / "cut.jpg"))


@pytest.mark.parametrize("call", ["encode", "decode", "decode_latents"])
def test_sparse_tensors_are_refused(call):
    codec = _tiny()
    value = {
        "encode": torch.zeros(3, 16, 16),
        "decode": torch.zeros(1, 8, 8, dtype=torch.long),
        "decode_latents": torch.zeros(1, 4, 8, 8),
    }[call].to_sparse()
    with pytest.raises(TypeError, match="sparse_coo; pass a dense tensor"):
        getattr(codec, call)(value)


@pytest.mark.parametrize("call", ["encode", "decode", "decode_latents", "reconstruct"])
def test_inputs_too_large_for_memory_are_refused_before_work(call):
    codec = _tiny()
    value = {
        "encode": torch.zeros(1, 3, 1, 1).expand(1, 3, 65536, 65536),
        "reconstruct": torch.zeros(1, 3, 1, 1).expand(1, 3, 65536, 65536),
        "decode": torch.zeros(1, 1, 1, dtype=torch.long).expand(1, 32768, 32768),
        "decode_latents": torch.zeros(1, 4, 1, 1).expand(1, 4, 32768, 32768),
    }[call]
    with pytest.raises(MemoryBudgetError, match="65536x65536 pixels needs at least"):
        getattr(codec, call)(value)


def test_read_only_numpy_images_encode_without_warnings():
    array = np.asarray(Image.new("RGB", (16, 16), (1, 2, 3)))
    assert not array.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tokens = _tiny().encode(array)
    assert tuple(tokens.shape) == (1, 8, 8)


def test_zero_size_suggests_a_valid_size():
    with pytest.raises(ValueError, match="nearest valid sizes: 2x2"):
        _tiny().tokens_shape(0, 0)


def test_encode_on_a_train_mode_codec_leaves_its_codebook_alone():
    torch.manual_seed(0)
    codec = Codec(
        CodecConfig(
            ch=32,
            ch_mult=(1, 2),
            attn_resolutions=(),
            resolution=16,
            quantizer=EMAConfig(codebook_size=32, dead_code_threshold=0.0),
        )
    )
    before = {k: v.clone() for k, v in codec.state_dict().items()}
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    first = codec.encode(x)
    assert torch.equal(first, codec.encode(x))
    codec.reconstruct(x)
    codec.decode_latents(torch.zeros(1, 4, 8, 8), quantize=True)
    assert all(torch.equal(v, before[k]) for k, v in codec.state_dict().items())
    assert all(m.training for m in codec.modules())  # each module's mode is restored
    out = codec(x)  # the training path still updates the EMA codebook
    assert out.sample.shape == x.shape and not torch.equal(
        codec.quantize.embedding.cluster_size, before["quantize.embedding.cluster_size"]
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name_or_path": 123}, TypeError, "name_or_path must be a model name or a path"),
        ({"name_or_path": ""}, ValueError, "empty model name"),
        ({"device": "foo"}, ValueError, "unknown device 'foo'"),
        ({"dtype": "float16"}, TypeError, "dtype must be a floating-point torch.dtype"),
        ({"dtype": torch.int64}, TypeError, "dtype must be a floating-point torch.dtype"),
        ({"revision": "v2"}, ValueError, "revision='v2' only applies to models on the Hugging Face Hub"),
    ],
)
def test_load_arguments_are_checked_first(kwargs, error, match):
    kwargs = {"name_or_path": "movqgan-tiny-photos", **kwargs}
    with pytest.raises(error, match=match):
        movq.load(kwargs.pop("name_or_path"), **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_load_on_cuda_without_gpu_says_so():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        movq.load("movqgan-tiny-photos", device="cuda")


def test_revision_with_a_local_folder_is_refused(tmp_path):
    _tiny().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="is a local path"):
        movq.load(tmp_path, revision="v2")


# ------------------------------------------------------------------ CLIs


def test_bench_cache_of_the_wrong_shape_is_measured_again(tmp_path, capsys):
    from movq.bench.cli import main

    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        Image.new("RGB", (20, 16), (60 * i, 90, 200)).save(data / f"p{i}.png")
    model = _tiny().save_pretrained(tmp_path / "codec")
    args = [
        "--model",
        str(model),
        "--data",
        str(data),
        "--resolution",
        "16",
        "--metrics",
        "l1",
        "--no-progress",
        "--cache",
        str(tmp_path / "cache"),
        "--threads",
        "1",
    ]
    assert main([*args, "--out", str(tmp_path / "a.json")]) == 0
    for shard in (tmp_path / "cache").rglob("shard*.pt"):
        torch.save({"done": [0], "stats": {"nope": 1}, "skipped": []}, shard)
    with pytest.warns(UserWarning, match="ignoring the unusable bench cache"):
        assert main([*args, "--out", str(tmp_path / "b.json")]) == 0
    first, second = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert first["results"] == second["results"]


def test_resume_falls_back_past_a_state_without_the_loop_keys(tmp_path):
    from movq.train import checkpoint as ckpt

    out = tmp_path / "run"
    full = {"step": 1, "epoch": 0, "position": 2, "rng": [ckpt.rng_state()], "w": torch.ones(1)}
    ckpt.save_checkpoint(out, 1, full, {}, keep_last=3)
    ckpt.save_checkpoint(out, 2, {"step": 2}, {}, keep_last=3)
    with pytest.warns(UserWarning, match="step-00000002.*lacks"):
        path, state = ckpt.load_latest_readable(out)
    assert path.name == "step-00000001" and state["step"] == 1


def test_four_byte_state_file_is_a_checkpoint_error(tmp_path):
    from movq.train import checkpoint as ckpt

    (tmp_path / "step-00000001").mkdir()
    (tmp_path / "step-00000001" / "state.pt").write_bytes(b"junk")
    with pytest.raises(ckpt.CheckpointError, match="state.pt is not a readable"):
        ckpt.load_checkpoint(tmp_path / "step-00000001")


@pytest.fixture()
def train_data(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        Image.new("RGB", (24, 20), (50 * i, 100, 30)).save(data / f"p{i}.png")
    return data


def _train_args(data, out, *extra):
    codec = json.dumps(
        {"ch_mult": [1, 2], "attn_resolutions": [], "quantizer": {"kind": "vq", "codebook_size": 64}}
    )
    return [
        "--data",
        str(data),
        "--out",
        str(out),
        "--codec",
        codec,
        "--resolution",
        "16",
        "--batch-size",
        "2",
        "--max-steps",
        "1",
        "--perceptual-net",
        "none",
        "--num-workers",
        "0",
        "--no-progress",
        "--device",
        "cpu",
        *extra,
    ]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            ["--resolution", "15"],
            "--resolution 15 must be a positive multiple of the codec's downsample factor 2",
        ),
        (["--resolution", "0"], "--resolution 0 must be a positive multiple"),
        (["--codec", json.dumps({"quantizer": {"kind": "vq", "codebook_size": 2**40}})], "needs at least"),
    ],
)
def test_train_refuses_sizes_that_cannot_work(train_data, tmp_path, capsys, extra, expected):
    from movq.train.cli import main as train_main

    assert train_main(_train_args(train_data, tmp_path / "run", *extra)) == 2
    assert expected in _one_line(capsys.readouterr().err, "movq-train")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_train_refuses_an_out_folder_inside_the_data(train_data, capsys):
    from movq.train.cli import main as train_main

    assert train_main(_train_args(train_data, train_data / "run")) == 2
    assert "is inside --data" in _one_line(capsys.readouterr().err, "movq-train")


def test_resume_from_a_state_that_does_not_fit_is_one_line(train_data, tmp_path, capsys):
    from movq.train import checkpoint as ckpt
    from movq.train.cli import main as train_main

    out = tmp_path / "run"
    assert train_main(_train_args(train_data, out)) == 0
    state_file = out / "checkpoints" / "step-00000001" / "state.pt"
    state = torch.load(state_file, weights_only=True)
    state.pop("codec_config")
    state["model"]["encoder.conv_in.weight"] = torch.zeros(7)
    torch.save(state, state_file)
    assert train_main(_train_args(train_data, out, "--resume", "--max-steps", "2")) == 2
    assert "does not fit this run" in _one_line(capsys.readouterr().err, "movq-train")
    del state["model"]
    torch.save(state, state_file)
    assert train_main(_train_args(train_data, out, "--resume", "--max-steps", "2")) == 2
    assert "lacks ['model']" in _one_line(capsys.readouterr().err, "movq-train")
    assert ckpt.latest_checkpoint(out).name == "step-00000001"


# ------------------------------------------------------------------ movq-tokenize sources and TokenDataset


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("m.jsonl", "[" * 100_000 + "]" * 100_000 + "\n", r"m.jsonl, line 1: JSON nested too deeply"),
        ("m.jsonl", b'{"image": "\xff"}\n', r"m.jsonl is not UTF-8"),
        (
            "m.csv",
            "image,caption\na.png," + "x" * 200_000 + "\n",
            r"m.csv, line .*not a readable CSV manifest",
        ),
        ("m.csv", b"image,caption\na.png,\xff\n", r"m.csv is not UTF-8"),
    ],
)
def test_hostile_manifests_are_one_line_value_errors(tmp_path, name, content, match):
    from movq.tokenize.sources import discover_sources

    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError, match=match):
        discover_sources(path)


def test_truncated_tar_is_a_value_error(tmp_path):
    import tarfile

    from movq.tokenize.decode import read_member
    from movq.tokenize.sources import Member, discover_sources

    info = tarfile.TarInfo("a.jpg")
    info.size = 8 * 2**30  # the header claims far more than the file holds
    (tmp_path / "s.tar").write_bytes(info.tobuf() + b"\xff\xd8" * 500)
    with pytest.raises(ValueError, match="s.tar is truncated or corrupt"):
        discover_sources(tmp_path / "s.tar")
    with pytest.raises(OSError, match="s.tar is truncated"):
        read_member(Member(str(tmp_path / "s.tar"), 512, 8 * 2**30))


def test_fifos_named_by_a_manifest_or_as_captions_never_block(tmp_path):
    import threading
    import time

    from movq.tokenize.decode import decode_item, read_caption
    from movq.tokenize.sources import SourceItem

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)

    def release() -> None:  # if a read blocked on the FIFO, end it after a while so the test fails, not hangs
        time.sleep(5)
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass

    threading.Thread(target=release, daemon=True).start()
    start = time.monotonic()
    item = decode_item(SourceItem("pipe.png", path=str(fifo)), 0, 16)
    assert item.pixels is None and "not a regular file" in item.error
    with pytest.raises(ValueError, match=f"{fifo} is not a regular file"):  # refused (the item is skipped), not read
        read_caption(SourceItem("a.png", path="a.png", caption_path=str(fifo)))
    assert time.monotonic() - start < 4


def test_tokenize_out_with_a_meta_json_that_is_not_an_object(tmp_path):
    from movq.tokenize.config import TokenizeError
    from movq.tokenize.meta import read_meta

    for content in (b"[1]", b"\xff\xfe", b"[" * 100_000):
        (tmp_path / "meta.json").write_bytes(content)
        with pytest.raises(TokenizeError, match="meta.json"):
            read_meta(tmp_path)


@pytest.fixture(scope="module")
def token_folder(tmp_path_factory):
    from movq.tokenize.cli import main as tokenize_main

    root = tmp_path_factory.mktemp("tok")
    (root / "data").mkdir()
    for i in range(3):
        Image.new("RGB", (20, 16), (60 * i, 90, 200)).save(root / "data" / f"p{i}.png")
    model = _tiny().save_pretrained(root / "codec")
    argv = [
        "--model",
        str(model),
        "--data",
        str(root / "data"),
        "--out",
        str(root / "out"),
        "--resolution",
        "16",
        "--num-workers",
        "0",
        "--no-progress",
        "--device",
        "cpu",
    ]
    assert tokenize_main(argv) == 0
    return root / "out"


@pytest.mark.parametrize(
    ("damage", "match", "access"),
    [
        (
            lambda o: (o / "meta.json").write_text(json.dumps({"kind": "pixels"})),
            "'kind' must be 'tokens' or 'latents'",
            False,
        ),
        (lambda o: (o / "index.jsonl").write_text("{nope\n"), r"index.jsonl, line 1: not valid JSON", False),
        (
            lambda o: (o / "index.jsonl").write_text('{"source": "a", "caption": null, "offset": 0}\n'),
            r"index.jsonl, line 1: expected",
            False,
        ),
        (
            lambda o: (o / "shards" / "shard-000000.safetensors").write_bytes(b"garbage" * 10),
            "cannot read the shard .*shard-000000",
            True,
        ),
        (
            lambda o: (o / "index.jsonl").write_text(  # as many rows as summary.json records, the first at row 99
                '{"source": "a", "caption": null, "shard": 0, "offset": 99}\n'
                + "".join((o / "index.jsonl").read_text().splitlines(keepends=True)[1:])
            ),
            "row 99 of shard 0",
            True,
        ),
    ],
)
def test_token_dataset_names_the_damaged_file(token_folder, tmp_path, damage, match, access):
    import shutil

    from movq.tokenize.dataset import TokenDataset

    out = tmp_path / "out"
    shutil.copytree(token_folder, out)
    assert TokenDataset(out)[0]["tokens"].shape == (8, 8)
    damage(out)
    with pytest.raises(ValueError, match=match):
        dataset = TokenDataset(out)
        if access:
            dataset[0]
