"""Every sentence of the README's "Guarantees" section has a test (issue #25, must-hold 9).

:data:`GUARANTEES` maps each checkable claim of the section (a quote of its words, in README order) to
the tests that assert it. The two tests here keep that map honest without running the tests it names:
every quote is still in the section and every sentence of the section holds a quote; every named test
exists (found by parsing the test files, for parametrized cases by finding the case's id in the file).

A node id is ``tests/FILE.py::TEST`` or ``tests/FILE.py::TEST[CASE]``, where CASE is a piece of the
parametrized case's id as the file spells it (``-k`` selects it: ``pytest "tests/FILE.py::TEST" -k CASE``).
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

GUARANTEES: list[tuple[str, list[str]]] = [
    # ---- No file runs code.
    ("Weights are read with safetensors, or with `torch.load(weights_only=True)`", [
        "tests/test_hostile_files.py::test_hostile_input[static check: every torch.load in src/movq has weights_only=True]",
        "tests/test_hub_safety.py::test_torch_saved_pickle_with_code_is_refused_and_runs_nothing",
    ]),
    ("Training checkpoints (`state.pt`) hold only tensors and plain values, RNG states included", [
        "tests/test_train_reliability.py::test_checkpoint_state_loads_with_weights_only",
        "tests/test_train_reliability.py::test_malicious_state_runs_nothing_and_names_the_file",
    ]),
    ("pickled `encoder.pkl` / `decoder.pkl` (zip or pre-1.6 container) go through a restricted unpickler", [
        "tests/test_hub_safety.py::test_dalle_pickled_modules_load_with_the_restricted_unpickler",
        "tests/test_hub_safety.py::test_malicious_legacy_container_is_refused_and_runs_nothing",
    ]),
    ("It rebuilds tensors and plain containers only, and refuses any other call", [
        "tests/test_hub_safety.py::test_malicious_dalle_pickle_is_refused_and_runs_nothing",
        "tests/test_hostile_files.py::test_hostile_input[DALL-E encoder.pkl + decoder.pkl, both Evil (zip)]",
        "tests/test_hostile_files.py::test_hostile_input[builtins.eval via STACK_GLOBAL/REDUCE, .ckpt]",
    ]),
    ("A pickle that asks to run code fails with an error naming the file", [
        "tests/test_hostile_files.py::test_hostile_input[plain pickle.dumps (protocol 2) with os.system, .pt]",
        "tests/test_hostile_files.py::test_hostile_input[training state.pt that is Evil (checkpoint.load_checkpoint)]",
        "tests/test_hub_safety.py::test_plain_pickle_with_code_is_refused_and_runs_nothing",
    ]),
    ("Nothing in it runs", [
        "tests/test_hostile_files.py::test_hostile_input[DALL-E encoder.pkl + decoder.pkl, both Evil (legacy container)]",
        "tests/test_hostile_files.py::test_hostile_input[torch.load(weights_only=False) smuggled as a global call]",
        "tests/test_hostile_inputs.py::test_movq_train_init_with_a_malicious_checkpoint_is_one_line",
    ]),
    # ---- Loading is strict.
    ("A missing, unexpected or mis-shaped key is an error that lists the keys", [
        "tests/test_hub_loading.py::test_wrong_shape_missing_and_unexpected_keys_are_listed",
    ]),
    ("A bad `config.json` field names the file, the field, the value and what is accepted", [
        "tests/test_loading_reliability.py::test_bad_config_fields_name_the_file_field_value_and_what_is_accepted",
        "tests/test_hostile_files.py::test_hostile_input[ch as a string '32']",
    ]),
    # ---- Errors come before work.
    ("Bad images, tokens, latents,", [
        "tests/test_bad_input.py::test_bad_images_are_refused",
        "tests/test_bad_input.py::test_bad_tokens_are_refused",
        "tests/test_api_edge_cases.py::test_zero_size_latents_are_refused",
        "tests/test_hostile_inputs.py::test_sparse_tensors_are_refused[decode_latents]",
    ]),
    ("flags, devices, unwritable outputs", [
        "tests/test_train_reliability.py::test_cli_user_errors_are_one_line",
        "tests/test_hostile_inputs.py::test_load_on_cuda_without_gpu_says_so",
        "tests/test_train_reliability.py::test_cli_cuda_without_gpu",
        "tests/test_bench_reliability.py::test_unwritable_outputs_are_found_before_the_run",
    ]),
    ("sizes that cannot fit in memory are refused with one clear message", [
        "tests/test_hostile_inputs.py::test_inputs_too_large_for_memory_are_refused_before_work",
        "tests/test_hostile_inputs.py::test_huge_config_is_refused_before_allocating",
    ]),
    ("The CLIs exit with code 2", [
        "tests/test_train_reliability.py::test_cli_user_errors_are_one_line",
        "tests/test_bench_reliability.py::test_bad_arguments_are_one_line_before_work",
        "tests/test_tokenize.py::test_cli_errors_are_one_line_before_any_compute",
        "tests/test_t2i_train.py::test_cli_errors_are_one_line",
        "tests/test_diffusion_train.py::test_cli_errors_are_one_line",
        "tests/test_hostile_cli.py::test_hostile_input",
    ]),
    ("diffusion and t2i sampling refuse NaN / inf noise, conditioning, `guidance_scale`, `eta` and timesteps", [
        "tests/test_hostile_generators.py::test_sample_refuses_non_finite_arguments",
        "tests/test_hostile_generators.py::test_generate_refuses_non_finite_conditioning_vectors",
        "tests/test_hostile_generators.py::test_guidance_refuses_a_non_finite_scale",
        "tests/test_hostile_generators.py::test_unet_refuses_a_non_finite_timestep",
        "tests/test_t2i_sampling.py::test_generate_rejects_bad_arguments",
    ]),
    ("temperatures in (0, 1e-6)", [
        "tests/test_hostile_generators.py::test_temperatures_that_overflow_the_logits_are_refused",
    ]),
    ("labels that are not ints in `[0, num_classes)`", [
        "tests/test_hostile_generators.py::test_generate_refuses_bad_labels_and_integer_arguments",
        "tests/test_hostile_generators.py::test_pipeline_refuses_more_class_names_than_classes_and_bad_labels",
        "tests/test_diffusion_unet.py::test_bad_inputs_raise_clear_errors",
    ]),
    ("sample sizes, step counts (at most 100000) or model sizes beyond the machine's memory, naming the argument", [
        "tests/test_hostile_generators.py::test_sample_refuses_a_shape_beyond_memory_before_allocating",
        "tests/test_hostile_generators.py::test_sample_refuses_non_integer_sizes",
        "tests/test_hostile_generators.py::test_diffusion_steps_have_an_upper_bound",
        "tests/test_hostile_generators.py::test_a_t2i_model_beyond_memory_is_refused_before_allocation",
        "tests/test_hostile_generators.py::test_a_unet_too_large_for_memory_is_refused_before_allocating",
        "tests/test_hostile_export.py::test_export_program_refuses_a_size_beyond_memory_before_work",
    ]),
    ("Model folders (codec, t2i, UNet, EMA) with NaN / inf weights are refused on load, naming the file", [
        "tests/test_hostile_files.py::test_a_codec_folder_with_nan_weights_is_refused_naming_the_file",
        "tests/test_hostile_inputs.py::test_checkpoint_with_nan_weights_is_refused",
        "tests/test_hostile_generators.py::test_t2i_from_pretrained_refuses_non_finite_weights",
        "tests/test_hostile_generators.py::test_unet_loading_refuses_non_finite_weights[model]",
        "tests/test_hostile_generators.py::test_unet_loading_refuses_non_finite_weights[ema]",
    ]),
    # ---- Only regular files are read.
    ("a FIFO, device, socket or folder in its place is refused with its path named, instead of blocking the read", [
        "tests/test_hostile_files.py::test_every_file_reader_refuses_a_fifo_naming_it",
        "tests/test_hostile_files.py::test_config_and_cond_files_that_are_fifos_are_refused_not_read",
        "tests/test_hostile_token_data.py::test_a_shard_that_is_a_fifo_is_refused_without_blocking",
        "tests/test_hostile_checkpoints.py::test_fifo_in_the_run_folder_is_refused_not_waited_on",
        "tests/test_hostile_cli.py::test_hostile_input[bench --data with a FIFO named x.png and a symlink to /dev/zero]",
        "tests/test_hostile_cli.py::test_hostile_input[tokenize: manifest naming /dev/zero, /etc/passwd]",
        "tests/test_hostile_cli.py::test_hostile_input[tokenize: manifest naming a FIFO]",
    ]),
    ("A caption file that is not one makes its image skipped and reported", [
        "tests/test_hostile_cli.py::test_hostile_input[tokenize: image folder whose caption photo0.txt is a FIFO]",
        "tests/test_hostile_inputs.py::test_fifos_named_by_a_manifest_or_as_captions_never_block",
    ]),
    # ---- Nothing half-written.
    ("Every output (weights, configs, results, caches, token shards, checkpoints, ONNX exports, the examples' images) "
     "is written under a temporary name and renamed into place", [
        "tests/test_hostile_files.py::test_every_output_is_written_through_movq_atomic",
        "tests/test_hostile_checkpoints.py::test_disk_full_while_writing_the_release_says_no_space_and_keeps_the_release",
        "tests/test_hostile_checkpoints.py::test_disk_full_on_a_config_or_a_shard_names_the_file_and_keeps_its_previous_version",
        "tests/test_bench.py::test_resume_after_interruption_is_identical",
        "tests/test_tokenize.py::test_killed_run_resumes_to_the_same_output",
        "tests/test_train_loop.py::test_checkpoint_write_is_atomic",
        "tests/test_hostile_export.py::test_export_onnx_writes_atomically",
        "tests/test_hostile_examples.py::test_encode_decode_composites_transparency_on_white_and_never_half_writes",
    ]),
    ("`movq.deploy.export_onnx` checks its output path before exporting", [
        "tests/test_hostile_export.py::test_export_onnx_checks_the_output_path_before_work",
    ]),
    ("refuses an opset it cannot write (18-23)", [
        "tests/test_hostile_export.py::test_export_onnx_refuses_an_opset_it_cannot_honour",
        "tests/test_hostile_export.py::test_export_onnx_writes_the_requested_opset",
    ]),
    # ---- What a killed run loses.
    ("`kill -9` during `movq-train` loses at most the steps since the last checkpoint (`--save-every`)", [
        "tests/test_train_loop.py::test_kill9_then_resume_equals_uninterrupted",
        "tests/test_train_loop.py::test_checkpoint_write_is_atomic",
    ]),
    ("`--resume` continues bit-exactly on the same number of processes: weights, optimizers, EMA, data order and "
     "every RNG stream", [
        "tests/test_train_loop.py::test_kill9_then_resume_equals_uninterrupted",
        "tests/test_train_reliability.py::test_rng_state_round_trip_restores_every_stream",
        "tests/test_train_reliability.py::test_new_dataloader_iterator_leaves_the_global_rng_alone",
        "tests/test_t2i_train.py::test_interrupted_then_resumed_equals_uninterrupted",
        "tests/test_diffusion_train.py::test_resume_is_bit_exact",
    ]),
    ("A damaged newest checkpoint is skipped with a warning, and the one before it is used", [
        "tests/test_train_reliability.py::test_damaged_state_falls_back_to_previous_checkpoint",
        "tests/test_hostile_checkpoints.py::test_damaged_values_fall_back_to_previous_checkpoint",
        "tests/test_hostile_inputs.py::test_resume_falls_back_past_a_state_without_the_loop_keys",
    ]),
    ("damage is an unreadable file", [
        "tests/test_train_reliability.py::test_damaged_state_falls_back_to_previous_checkpoint",
        "tests/test_hostile_inputs.py::test_four_byte_state_file_is_a_checkpoint_error",
    ]),
    ("NaN / inf weights, EMA or optimizer state", [
        "tests/test_hostile_checkpoints.py::test_damaged_values_fall_back_to_previous_checkpoint[NaN model weight]",
        "tests/test_hostile_checkpoints.py::test_damaged_values_fall_back_to_previous_checkpoint[inf EMA weight]",
        "tests/test_hostile_checkpoints.py::test_damaged_values_fall_back_to_previous_checkpoint[NaN Adam moment]",
        "tests/test_hostile_checkpoints.py::test_every_checkpoint_damaged_in_its_values_is_one_line",
    ]),
    ("a step, epoch or position that is not an int >= 0 or is past the run's `max_steps`", [
        "tests/test_hostile_checkpoints.py::test_damaged_values_fall_back_to_previous_checkpoint[step -3]",
        "tests/test_hostile_checkpoints.py::test_damaged_values_fall_back_to_previous_checkpoint[step 'abc']",
        "tests/test_hostile_checkpoints.py::test_damaged_values_fall_back_to_previous_checkpoint[epoch -1]",
        "tests/test_hostile_checkpoints.py::test_damaged_values_fall_back_to_previous_checkpoint[position 2.5]",
        "tests/test_hostile_checkpoints.py::test_damaged_values_fall_back_to_previous_checkpoint[step past the saved max_steps]",
    ]),
    ("malformed RNG states", [
        "tests/test_hostile_checkpoints.py::test_damaged_values_fall_back_to_previous_checkpoint[rng []]",
        "tests/test_hostile_checkpoints.py::test_damaged_values_fall_back_to_previous_checkpoint[torch RNG of 3 bytes]",
        "tests/test_hostile_checkpoints.py::test_damaged_values_fall_back_to_previous_checkpoint[python RNG position out of range]",
    ]),
    ("Every trainer writes `OUT/train_config.json` first", [
        "tests/test_hostile_checkpoints.py::test_every_trainer_writes_its_run_config_before_any_work",
    ]),
    ("so `--out X --resume` also resumes a run killed before its first checkpoint", [
        "tests/test_train_reliability.py::test_resume_without_a_checkpoint_uses_the_saved_config_or_names_the_flags",
        "tests/test_diffusion_train.py::test_run_killed_before_its_first_checkpoint_resumes_with_its_saved_config",
    ]),
    ("`movq-tokenize` loses at most the shard in progress", [
        "tests/test_tokenize.py::test_killed_run_resumes_to_the_same_output",
        "tests/test_tokenize.py::test_rerun_skips_finished_shards_and_redoes_a_deleted_one",
    ]),
    ("`movq-bench --cache` the chunks measured since its last cache save (`--cache-interval`, 60 s by default; "
     "0 saves after every chunk)", [
        "tests/test_hostile_cli.py::test_bench_killed_with_sigkill_loses_at_most_the_chunks_since_its_last_cache_save",
        "tests/test_bench.py::test_resume_after_interruption_is_identical",
    ]),
    # ---- A diverged run stops and keeps the good files.
    ("A NaN or inf loss stops training with an error naming the step (exit code 2)", [
        "tests/test_hostile_checkpoints.py::test_nan_loss_stops_with_the_step_and_keeps_the_last_good_state",
    ]),
    ("a checkpoint or release with NaN / inf weights is refused before it is written, so it never replaces a good one", [
        "tests/test_hostile_checkpoints.py::test_nan_weights_never_replace_the_checkpoint_or_the_release",
        "tests/test_hostile_checkpoints.py::test_release_with_nan_weights_is_not_written",
        "tests/test_hostile_checkpoints.py::test_checkpoint_with_nan_state_is_not_written",
    ]),
    # ---- Token data is checked on read.
    ("Every shard `TokenDataset` or a `movq-tokenize` rerun opens must be a regular file", [
        "tests/test_hostile_token_data.py::test_a_shard_that_is_a_fifo_is_refused_without_blocking",
    ]),
    ("stamped with the run's id and its own number", [
        "tests/test_hostile_token_data.py::test_token_dataset_refuses_a_shard_that_is_not_the_one_meta_describes[another run's shard]",
        "tests/test_hostile_token_data.py::test_token_dataset_refuses_a_shard_that_is_not_the_one_meta_describes[shard 2 copied over shard 0]",
        "tests/test_hostile_cli.py::test_hostile_input[shard 0 of another run (same shape)]",
    ]),
    ("with the run's item shape and dtype", [
        "tests/test_hostile_token_data.py::test_token_dataset_refuses_a_shard_that_is_not_the_one_meta_describes[another item shape]",
        "tests/test_hostile_token_data.py::test_token_dataset_refuses_a_shard_that_is_not_the_one_meta_describes[another dtype]",
    ]),
    ("token ids in `[0, codebook_size)` (finite values for latents)", [
        "tests/test_hostile_token_data.py::test_token_dataset_refuses_a_shard_that_is_not_the_one_meta_describes[ids beyond the codebook]",
        "tests/test_hostile_token_data.py::test_token_dataset_refuses_a_shard_that_is_not_the_one_meta_describes[float tokens]",
        "tests/test_tokenize.py::test_latents_equal_encode_latents",
    ]),
    ("`index.jsonl` must list as many items as `summary.json` records", [
        "tests/test_hostile_token_data.py::test_an_index_cut_at_a_line_boundary_is_refused",
        "tests/test_hostile_cli.py::test_hostile_input[index.jsonl cut at a line boundary]",
    ]),
    ("A rerun redoes a shard that fails, with a warning", [
        "tests/test_hostile_token_data.py::test_rerun_redoes_a_foreign_or_swapped_shard",
    ]),
    # ---- Disk space.
    ("about 16 bytes per codec parameter and 12 per discriminator parameter", [
        "tests/test_hostile_checkpoints.py::test_a_checkpoint_takes_16_bytes_per_codec_parameter_and_12_per_discriminator_parameter",
    ]),
    ("That is about 1.1 GB for `movqgan-67m` and 85 MB for `movqgan-tiny`", [
        "tests/test_hostile_checkpoints.py::test_a_checkpoint_takes_16_bytes_per_codec_parameter_and_12_per_discriminator_parameter",
    ]),
    ("A run needs `keep_last + 1` checkpoints of space, because the next one is complete before the oldest is removed", [
        "tests/test_hostile_checkpoints.py::test_a_run_needs_keep_last_plus_one_checkpoints_of_space",
        "tests/test_train_loop.py::test_checkpoint_write_is_atomic",
    ]),
    ("Add the release weights (4 bytes per parameter)", [
        "tests/test_hostile_checkpoints.py::test_a_checkpoint_takes_16_bytes_per_codec_parameter_and_12_per_discriminator_parameter",
    ]),
    ('If the disk fills, the error says "no space left on device" and names the last good checkpoint, which stays loadable', [
        "tests/test_train_reliability.py::test_disk_full_names_last_good_checkpoint",
        "tests/test_hostile_checkpoints.py::test_disk_full_inside_torch_save_says_no_space",
    ]),
    ("Any other file (the release weights, configs, shards) says the same and names the file, whose previous version "
     "is unchanged", [
        "tests/test_hostile_checkpoints.py::test_disk_full_while_writing_the_release_says_no_space_and_keeps_the_release",
        "tests/test_hostile_checkpoints.py::test_disk_full_on_a_config_or_a_shard_names_the_file_and_keeps_its_previous_version",
    ]),
    ("the trainers exit with code 2", [
        "tests/test_hostile_checkpoints.py::test_disk_full_inside_torch_save_says_no_space",
        "tests/test_hostile_checkpoints.py::test_disk_full_while_writing_the_release_says_no_space_and_keeps_the_release",
    ]),
    # ---- Same pixels everywhere.
    ("Training, `movq-bench`, `movq-tokenize` and the examples read image files with one function (`movq.image_files`)", [
        "tests/test_hostile_files.py::test_bench_and_tokenize_read_images_as_movq_image_files_does",
        "tests/test_train_reliability.py::test_exif_orientation_is_applied_in_training",
        "tests/test_hostile_examples.py::test_encode_decode_composites_transparency_on_white_and_never_half_writes",
    ]),
    ("It applies EXIF orientation,", [
        "tests/test_hostile_files.py::test_hostile_input[EXIF-rotated JPEG (orientation 6, stored 40x20)]",
        "tests/test_train_reliability.py::test_exif_orientation_is_applied_in_training",
        "tests/test_hostile_files.py::test_bench_and_tokenize_read_images_as_movq_image_files_does[EXIF rotated]",
        "tests/test_hostile_examples.py::test_encode_decode_reads_16_bit_pngs_with_the_project_reader",
    ]),
    ("scales 16-bit images", [
        "tests/test_hostile_files.py::test_hostile_input[16-bit grayscale PNG (value 32768 = mid-gray)]",
        "tests/test_train_reliability.py::test_sixteen_bit_png_trains_as_its_gray_level",
        "tests/test_hostile_files.py::test_bench_and_tokenize_read_images_as_movq_image_files_does[16-bit gray]",
        "tests/test_hostile_examples.py::test_encode_decode_reads_16_bit_pngs_with_the_project_reader",
    ]),
    ("composites transparency on white", [
        "tests/test_hostile_files.py::test_hostile_input[RGBA PNG, fully transparent black]",
        "tests/test_train_reliability.py::test_transparent_pixels_are_composited_on_white",
        "tests/test_hostile_files.py::test_bench_and_tokenize_read_images_as_movq_image_files_does[transparent]",
        "tests/test_hostile_examples.py::test_encode_decode_composites_transparency_on_white_and_never_half_writes",
    ]),
]
"""(quote of a README "Guarantees" claim, the node ids of the tests that assert it), in README order."""

UNCLAIMED = ("What movq checks, so that a file from elsewhere or a killed run cannot hurt you:",)
"""Sentences of the section that state nothing to test (its introduction)."""


def _flat(text: str) -> str:
    return " ".join(text.split())


@cache
def guarantees_section() -> str:
    """The README's "## Guarantees" section, without its heading, whitespace collapsed."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Guarantees\n(.*?)(?=^## )", readme, re.S | re.M)
    assert match, "README.md has no '## Guarantees' section"
    return match.group(1)


def sentences() -> list[str]:
    """The section's sentences: bullet markers and bold titles dropped, split after a full stop."""
    text = re.sub(r"^\s*- (\*\*[^*]+\*\*)?", " ", guarantees_section(), flags=re.M)
    parts = re.split(r"(?<=\.)\s+(?=[A-Z`\"(])", _flat(text))
    for intro in UNCLAIMED:  # the introduction ends with a colon, not a full stop
        parts = [s for part in parts for s in (part.split(intro) if intro in part else [part])]
    return [s.strip() for s in parts if s.strip()]


def test_every_sentence_of_the_guarantees_has_a_claim_and_every_claim_is_in_the_readme():
    section = _flat(guarantees_section())
    quotes = [quote for quote, _ in GUARANTEES]
    missing = [quote for quote in quotes if _flat(quote) not in section]
    assert not missing, f"claims no longer in README's Guarantees (update GUARANTEES): {missing}"
    positions = [section.index(_flat(quote)) for quote in quotes]
    assert positions == sorted(positions), "GUARANTEES must follow the README's order"
    assert all(_flat(intro) in section for intro in UNCLAIMED)
    uncovered = [s for s in sentences() if not any(_flat(q) in s for q in quotes)]
    assert not uncovered, f"README Guarantees sentences without a test in GUARANTEES: {uncovered}"
    bullets = [b for b in re.split(r"^\s*- ", guarantees_section(), flags=re.M)[1:]]
    assert bullets and all(any(_flat(q) in _flat(b) for q in quotes) for b in bullets)
    assert all(tests for _, tests in GUARANTEES), "every claim names at least one test"


@cache
def _test_names(path: Path) -> frozenset[str]:
    """Test functions (``test_x``) and test methods (``TestY::test_x``) of a test file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.update(f"{node.name}::{item.name}" for item in node.body if isinstance(item, ast.FunctionDef))
    return frozenset(names)


def test_every_named_test_exists():
    wrong = []
    for node in sorted({node for _, tests in GUARANTEES for node in tests}):
        match = re.fullmatch(r"(tests/[\w/]+\.py)::([\w:]+)(?:\[(.+)\])?", node)
        if not match:
            wrong.append(f"{node}: not a node id 'tests/FILE.py::TEST[CASE]'")
            continue
        path, name, case = ROOT / match[1], match[2], match[3]
        if not path.is_file():
            wrong.append(f"{node}: no file {match[1]}")
        elif name not in _test_names(path):
            wrong.append(f"{node}: {match[1]} has no test {name}")
        elif case is not None and case not in path.read_text(encoding="utf-8"):
            wrong.append(f"{node}: no case {case!r} in {match[1]}")
    assert not wrong, wrong
