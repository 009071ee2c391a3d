"""Formatting of bench results: the protocol, Markdown tables in the seeds' layout, and ``results.json``."""

from __future__ import annotations

import csv
import io
import json
import math
import platform
from pathlib import Path
from typing import Any

import torch

import movq
from movq.atomic import atomic_write_text
from movq.bench.metric_table import METRICS


def model_info(name: str, codec: movq.Codec, resolution: int) -> dict[str, Any]:
    """Latent size / codebook size / compression of one codec, for the table's first columns."""
    f = getattr(codec, "downsample_factor", None)
    try:
        grid = "x".join(str(s) for s in codec.tokens_shape(resolution, resolution))
    except Exception:
        grid = f"{resolution // f}x{resolution // f}" if f else "-"
    config = getattr(codec, "config", None)
    return {
        "model": name, "config": getattr(config, "name", type(codec).__name__), "latent_size": grid,
        "codebook_size": getattr(codec, "codebook_size", None), "compression": f,
        "parameters": sum(p.numel() for p in codec.parameters()),
        **rate_info(codec, resolution),
    }


def rate_info(codec: movq.Codec, resolution: int) -> dict[str, Any]:
    """Tokens per image, levels (residual depth / groups, else 1) and bits per pixel
    (:meth:`movq.Codec.bits_per_pixel`) of ``codec`` at ``resolution`` x ``resolution``, total and per level;
    None for a codec without tokens."""
    try:
        shape = codec.tokens_shape(resolution, resolution)
        bpp = codec.bits_per_pixel(resolution, resolution)
    except Exception:
        return {"tokens_per_image": None, "levels": None, "bits_per_pixel": None, "bits_per_pixel_per_level": None}
    levels = shape[0] if len(shape) == 3 else 1
    return {"tokens_per_image": math.prod(shape), "levels": levels, "bits_per_pixel": bpp,
            "bits_per_pixel_per_level": [bpp / levels] * levels}


def protocol(runner: Any) -> dict[str, Any]:
    """The protocol block: everything needed to reproduce or compare the numbers."""
    cfg, ctx = runner.cfg, runner.ctx
    extractor, lpips = runner.extractor, runner.lpips
    out: dict[str, Any] = {
        "data": str(Path(cfg.data).resolve()),
        "layout": "by-domain (top-level subfolders; 'all' = count-weighted mean)" if cfg.by_domain
        else "single set (all images under the folder, recursively)",
        "resolution": cfg.resolution,
        "protocol": cfg.protocol, "resize": cfg.resize,
        "preprocessing": cfg.preprocessing.describe(cfg.resolution),
        "reconstruction": "codec.decode(codec.encode(x)); output clamped to [-1,1] and rounded to 8-bit before metrics",
        "metrics": list(cfg.metrics),
        "metric_definitions": {m: METRICS[m].definition for m in cfg.metrics},
        "limit": cfg.limit, "dtype": cfg.dtype, "device": str(ctx.device), "batch_size": cfg.batch_size,
        "world_size": ctx.world_size,
        "models": [model_info(name, codec, cfg.resolution) for name, codec in runner.codecs.items()],
        "movq_version": movq.__version__, "torch_version": torch.__version__, "python": platform.python_version(),
    }
    if extractor is not None:
        from movq.metrics.inception import FID_MODES

        out["feature_extractor"] = extractor.description
        out["feature_extractor_standard"] = bool(getattr(extractor, "is_standard", False))
        out["fid_mode"] = cfg.fid_mode
        out["fid_preprocessing"] = FID_MODES[cfg.fid_mode]
        if cfg.reference:
            out["fid_reference"] = f"statistics of the same cropped inputs from --reference {Path(cfg.reference).resolve()}"
    if cfg.save_reference:
        out["saved_reference"] = str(Path(cfg.save_reference).resolve())
    if cfg.export_npz:
        out["exported_npz"] = str(Path(cfg.export_npz).resolve())
    if lpips:
        out["lpips"] = "; ".join(dict.fromkeys(net.description for net in lpips.values()))
        out["lpips_standard"] = all(bool(net.is_standard) for net in lpips.values())
        out["lpips_networks"] = {m: {"description": net.description, "standard": bool(net.is_standard)} for m, net in lpips.items()}
    return out


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def results_json(runner: Any, outcome: dict[str, Any]) -> dict[str, Any]:
    """``{"protocol", "results", "skipped", "throughput_images_per_s", ...}`` (NaN written as null)."""
    rows = outcome["stats"].rows()
    return _clean({
        "protocol": protocol(runner),
        "results": rows,
        "skipped": outcome["skipped"],
        "upscaled_images": int(outcome["upscaled"]),
        "throughput_images_per_s": outcome["throughput"],
        "elapsed_s": outcome["elapsed_s"],
    })


CODE_COLUMNS = (("Tokens", "tokens_per_image", 0), ("BPP", "bits_per_pixel", 4), ("Usage", "codebook_usage", 4),
                ("Perplexity", "perplexity", 1))
"""The rate and codebook columns of a result table: (header, key of the model info or result row, digits)."""


def code_cell(info: dict[str, Any], row: dict[str, Any], key: str, digits: int, levels: bool = True) -> str:
    """One cell of :data:`CODE_COLUMNS`: the value of ``key`` (model info first, then the result row);
    with ``levels``, a multi-level codec's usage / perplexity also lists each level's (``0.52 (0.98/0.41/0.17)``)."""
    value = info.get(key, row.get(key))
    if value is None:
        return "-"
    text = f"{value:.{digits}f}"
    per_level = level_values(row, key, digits)
    return f"{text} ({per_level})" if levels and per_level else text


def level_values(row: dict[str, Any], key: str, digits: int) -> str:
    """``"0.98/0.41/0.17"``: a multi-level codec's per-level usage or perplexity (``key``), else ``""``."""
    values = row.get(f"{key}_per_level") if key in ("codebook_usage", "perplexity") else None
    return "/".join(f"{v:.{digits}f}" for v in values) if values and len(values) > 1 else ""


def _fmt(value: Any, metric: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{METRICS[metric].digits if metric in METRICS else 4}f}"


def _header(metric: str, proto: dict[str, Any]) -> str:
    """A metric's column header; an LPIPS column computed with non-standard weights says so."""
    header = METRICS[metric].header
    net = proto.get("lpips_networks", {}).get(metric)
    if net is not None and not net["standard"]:
        name, _, arrow = header.rpartition(" ")
        header = f"{name} (non-standard weights) {arrow}"
    return header


def markdown(result: dict[str, Any]) -> str:
    """Markdown: a protocol list, then the table(s) in the seeds' layout.

    Single set: one row per model (model, latent size, codebook size, compression, then metrics).
    By domain: one table per metric, domain rows (``all`` first) x model columns.
    """
    proto = result["protocol"]
    metrics = [m for m in proto["metrics"]]
    lines = ["**Protocol**", ""]
    lines += [f"- data: `{proto['data']}` ({proto['layout']})", f"- preprocessing (--protocol): {proto['preprocessing']}",
              f"- reconstruction: {proto['reconstruction']}", f"- dtype {proto['dtype']} on {proto['device']}, "
              f"batch {proto['batch_size']}, {proto['world_size']} process(es)"]
    if "feature_extractor" in proto:
        label = "" if proto["feature_extractor_standard"] else " — **substitute network: FID/IS not comparable to published numbers**"
        lines.append(f"- FID/IS features: {proto['feature_extractor']}{label}")
        lines.append(f"- FID input (--fid-mode {proto['fid_mode']}): {proto['fid_preprocessing']}")
        if "fid_reference" in proto:
            lines.append(f"- FID reference: {proto['fid_reference']}")
    for key, what in (("saved_reference", "reference batch (cropped inputs + statistics)"), ("exported_npz", "reconstructions")):
        if key in proto:
            lines.append(f"- ADM-evaluator .npz of the {what}: `{proto[key]}`")
    for metric, net in proto.get("lpips_networks", {}).items():
        label = "" if net["standard"] else " — **non-standard LPIPS weights**"
        lines.append(f"- {METRICS[metric].header.split(' ')[0]}: {net['description']}{label}")
    lines.append("")
    info = {m["model"]: m for m in proto["models"]}
    rows = result["results"]
    domains = list(dict.fromkeys(r["domain"] for r in rows))
    if domains == ["all"]:
        head = ["Model", "Latent size", "Num Z", "Compression", "Images"] + [_header(m, proto) for m in metrics]
        head += [header for header, _, _ in CODE_COLUMNS]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            i = info[r["model"]]
            cells = [r["model"], i["latent_size"], str(i["codebook_size"]), str(i["compression"]), str(r["n_images"])]
            cells += [_fmt(r.get(m), m) for m in metrics]
            cells += [code_cell(i, r, key, digits) for _, key, digits in CODE_COLUMNS]
            lines.append("| " + " | ".join(cells) + " |")
    else:
        models = list(info)
        order = ["all"] + [d for d in domains if d != "all"]
        counts = {r["domain"]: r["n_images"] for r in rows}
        for m in metrics:
            lines += [f"{_header(m, proto)}:", "", "| domain/model | images | " + " | ".join(models) + " |",
                      "|" + "---|" * (len(models) + 2)]
            for d in order:
                cell = {r["model"]: r.get(m) for r in rows if r["domain"] == d}
                lines.append(f"| {d} | {counts.get(d, 0)} | " + " | ".join(_fmt(cell.get(k), m) for k in models) + " |")
            lines.append("")
    tail = [f"Images skipped: {len(result['skipped'])}" + "".join(f"\n- `{s['path']}`: {s['reason']}" for s in result["skipped"])]
    if result["upscaled_images"]:
        tail.append(f"Warning: {result['upscaled_images']} image(s) smaller than {proto['resolution']} px were upscaled.")
    if result["throughput_images_per_s"]:
        tail.append(f"Throughput: {result['throughput_images_per_s']:.2f} images/s (all models, this run).")
    return "\n".join(lines + [""] + tail) + "\n"


def write_json(result: dict[str, Any], path: str | Path) -> None:
    """``result`` as indented UTF-8 JSON, written atomically."""
    atomic_write_text(path, json.dumps(result, indent=2, ensure_ascii=False) + "\n")


def write_csv(head: list[str], rows: list[dict[str, Any]], path: str | Path) -> None:
    """A CSV file with the columns ``head`` and one line per row (``row.get(column)``), written atomically:
    ``None`` is an empty cell, a list is joined by ``/``, floats are Python's shortest round-trip repr."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(head)
    for row in rows:
        cells = []
        for key in head:
            value = row.get(key)
            if isinstance(value, list):
                value = "/".join(repr(v) for v in value)
            cells.append("" if value is None else value)
        writer.writerow(cells)
    atomic_write_text(path, buffer.getvalue())
