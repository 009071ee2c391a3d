"""``movq-bench compare``: several codecs through the bench's protocol in one run, written as one folder.

The numbers are the bench's own (one :class:`~movq.bench.runner.Runner` over all ``--models``: the
same loop, statistics and ``results.json`` as ``movq-bench --model a --model b ...``); this module
only lays them out::

    OUT/results.json         the bench's JSON (protocol, one row per codec)
    OUT/results.md           the bench's Markdown report
    OUT/results.csv          one row per codec: rate (tokens, bits per pixel), codebook use, metrics
    OUT/rate_distortion.png  PSNR and LPIPS against bits per pixel, one labelled point per codec
    OUT/grid.png             the same crops reconstructed by every codec, worst mean PSNR first
    OUT/report.html          table, plot and grid on one self-contained page (relative image links)

matplotlib is imported only here (the ``bench`` extra); every file is written atomically.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import torch

from movq.atomic import atomic_write, atomic_write_text, check_writable_dir
from movq.bench.data import load_image
from movq.bench.metric_table import METRICS
from movq.bench.per_image import reconstruct
from movq.bench.report import CODE_COLUMNS, code_cell, level_values, markdown, write_json
from movq.bench.report import write_csv as write_table
from movq.image_files import check_image_folder
from movq.strict import unknown_name_error

COMPARE_METRICS = ("fid", "ssim", "psnr", "l1", "lpips")
"""Default ``--metrics`` of ``compare`` (the plot's PSNR and LPIPS included; PSNR is always measured:
it orders the grid)."""
FILES = {"json": "results.json", "markdown": "results.md", "csv": "results.csv", "plot": "rate_distortion.png",
         "grid": "grid.png", "html": "report.html"}
"""The files ``compare`` writes into ``--out``."""
PLOTTED = ("psnr", "lpips")
"""The distortion metrics of the rate-distortion plot (those measured get a panel each)."""
LABEL_OFFSETS = ((7, 4), (7, -4), (-7, 4), (-7, -4))
"""Offsets (points) of a codec's label from its marker: the next one for each earlier point nearby."""
CSV_INFO = ("config", "latent_size", "codebook_size", "compression", "levels", "tokens_per_image", "bits_per_pixel")


def check_inputs(models: list[str], data: str, out: str) -> Path:
    """Refuse, before any work, what ``compare`` cannot use: a model that is neither an existing path nor
    a registered name (``movq.list_models()``), a model given twice, a missing data folder, an ``--out``
    that is an existing file (or not writable). ``ValueError`` naming the flag; returns ``out`` as a Path."""
    from movq.hub.registry import REGISTRY

    for i, spec in enumerate(models):
        if spec in models[:i]:
            raise ValueError(f"--models: {spec!r} is given twice")
        if not Path(spec).exists() and spec not in REGISTRY:
            raise ValueError("--models: " + unknown_name_error("model", spec, REGISTRY, listing="registered models")
                             + " (and no such file or folder)")
    try:
        check_image_folder(data)
    except (FileNotFoundError, NotADirectoryError) as err:
        raise ValueError(f"--data: {err}") from None
    return check_writable_dir(out, "--out")


def labels(models: list[str]) -> dict[str, str]:
    """Short, unique display names: a path's last part (the whole spec where two parts coincide)."""
    short = {m: Path(m).name if Path(m).exists() else m for m in models}
    names = list(short.values())
    return {m: (s if names.count(s) == 1 else m) for m, s in short.items()}


def codec_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per codec (the whole-set row: ``all`` with ``--by-domain``), its model info merged in."""
    info = {m["model"]: m for m in result["protocol"]["models"]}
    last = {r["model"]: r for r in result["results"]}  # the 'all' row comes last with several domains
    return [{**info[m], **last[m]} for m in info]


def write_csv(rows: list[dict[str, Any]], metrics: list[str], names: dict[str, str], path: Path) -> None:
    """``results.csv``: model, label, the model info, images, the metrics, codebook usage / perplexity
    (per level joined by ``/``). Floats are written as Python's shortest round-trip repr."""
    metric_keys = [k for m in metrics for k in ((m, "is_real") if m == "is" else (m,))]
    head = ["model", "label", *CSV_INFO, "n_images", *metric_keys,
            "codebook_usage", "perplexity", "codebook_usage_per_level", "perplexity_per_level"]
    write_table(head, [{**row, "label": names[row["model"]]} for row in rows], path)


def _save_figure(figure: Any, path: Path) -> None:
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100, facecolor="white"))


def plot_rate_distortion(rows: list[dict[str, Any]], names: dict[str, str], path: Path) -> None:
    """PNG: one panel per measured metric of :data:`PLOTTED` against bits per pixel, a labelled point per codec."""
    from matplotlib.figure import Figure

    panels = [m for m in PLOTTED if any(r.get(m) is not None for r in rows)]
    figure = Figure(figsize=(5.2 * max(1, len(panels)), 4.2), layout="constrained")
    axes = figure.subplots(1, max(1, len(panels)), squeeze=False)[0]
    colours = [f"C{i % 10}" for i in range(len(rows))]
    for ax, metric in zip(axes, panels or [None]):
        if metric is None:
            ax.text(0.5, 0.5, "no PSNR / LPIPS measured", ha="center", va="center", transform=ax.transAxes)
            continue
        points = [(row["bits_per_pixel"], row[metric], names[row["model"]], colour) for row, colour in zip(rows, colours)
                  if row.get("bits_per_pixel") is not None and row.get(metric) is not None]
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        span_x, span_y = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
        for i, (x, y, name, colour) in enumerate(points):
            ax.scatter([x], [y], s=60, color=colour, edgecolor="black", linewidth=0.5, zorder=3, label=name)
            # labels of points that (nearly) coincide go to different corners instead of on top of each other
            near = sum(abs(x - px) < 0.06 * span_x and abs(y - py) < 0.06 * span_y for px, py, *_ in points[:i])
            dx, dy = LABEL_OFFSETS[near % len(LABEL_OFFSETS)]
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=9,
                        ha="left" if dx > 0 else "right", va="bottom" if dy > 0 else "top")
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(METRICS[metric].header)
        ax.set_title(f"{METRICS[metric].header.split()[0]} vs rate")
        ax.grid(True, alpha=0.3)
        ax.margins(x=0.25, y=0.2)
    handles, legend_labels = axes[0].get_legend_handles_labels()
    if handles:
        axes[-1].legend(handles, legend_labels, fontsize=8, loc="best")
    _save_figure(figure, path)


def worst_images(stats: Any, models: list[str], count: int) -> list[tuple[int, float]]:
    """``(record index, mean PSNR over codecs)`` of the ``count`` images with the lowest mean PSNR, worst first."""
    table = torch.stack([stats.image_psnr[m].values() for m in models])  # [models, images], NaN: not measured
    mean = table.mean(0)
    measured = [i for i in range(mean.numel()) if not math.isnan(float(mean[i]))]
    measured.sort(key=lambda i: (float(mean[i]), i))
    return [(i, float(mean[i])) for i in measured[:count]]


@torch.no_grad()
def plot_grid(runner: Any, stats: Any, names: dict[str, str], count: int, path: Path, progress: bool = True) -> list[str]:
    """PNG: rows = the ``count`` worst images (:func:`worst_images`), columns = the bench's crop and each
    codec's reconstruction (the bench's own ``reconstruct``), each cell labelled with its PSNR.
    Returns the images' relative paths, in row order."""
    from matplotlib.figure import Figure

    models = list(runner.codecs)
    chosen = worst_images(stats, models, count)
    resolution = runner.cfg.resolution
    crops = [load_image(runner.records[i], i, resolution).pixels for i, _ in chosen]
    real = torch.stack(crops).to(runner.ctx.device).float() / 255.0
    columns = [crops]
    codecs = runner.codecs.items()
    if progress:
        from tqdm import tqdm

        codecs = tqdm(codecs, desc="compare grid", unit="codec", total=len(models))
    for _, codec in codecs:
        columns.append([(img * 255).round().to(torch.uint8).cpu() for img in reconstruct(codec, real)[1]])
    cell = max(resolution, 180) / 100  # inches at 100 dpi: crops of 180 px and more at their own size
    figure = Figure(figsize=(cell * len(columns), (cell + 0.25) * len(chosen) + 0.3), layout="constrained")
    axes = figure.subplots(len(chosen), len(columns), squeeze=False)
    titles = ["original"] + [names[m] for m in models]
    psnr = {m: stats.image_psnr[m].values() for m in models}
    for r, (index, _) in enumerate(chosen):
        for c, column in enumerate(columns):
            ax = axes[r][c]
            ax.imshow(column[r].permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=10, fontweight="bold")
            if c == 0:
                ax.set_xlabel(_shorten(runner.records[index].rel, 24), fontsize=8)
            else:
                ax.set_xlabel(f"PSNR {float(psnr[models[c - 1]][index]):.2f} dB", fontsize=8)
    _save_figure(figure, path)
    return [runner.records[i].rel for i, _ in chosen]


def _shorten(text: str, width: int) -> str:
    """``text`` cut in the middle to ``width`` characters (start and end stay: a numbered file's number and suffix)."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


def html_report(result: dict[str, Any], rows: list[dict[str, Any]], names: dict[str, str], grid_rows: list[str]) -> str:
    """``report.html``: the protocol, the table, the plot and the grid; inline CSS, images by relative link."""
    proto = result["protocol"]
    metrics = [m for m in proto["metrics"]]
    head = ["Codec", "Config", "Latent", "Num Z"] + [h for h, _, _ in CODE_COLUMNS] + [METRICS[m].header for m in metrics]
    body = []
    for row in rows:
        cells = [html.escape(c) for c in (names[row["model"]], str(row["config"]), str(row["latent_size"]),
                                          str(row["codebook_size"]))]
        for _, key, digits in CODE_COLUMNS:  # a multi-level codec's levels on a second, smaller line
            levels = level_values(row, key, digits)
            cells.append(html.escape(code_cell(row, row, key, digits, levels=False))
                         + (f'<br><span class="levels">{html.escape(levels)}</span>' if levels else ""))
        cells += [html.escape(_number(row.get(m), METRICS[m].digits)) for m in metrics]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    facts = [f"data: <code>{html.escape(proto['data'])}</code> ({html.escape(proto['layout'])})",
             f"images: {rows[0]['n_images'] if rows else 0}, resolution {proto['resolution']}",
             f"preprocessing: {html.escape(proto['preprocessing'])}",
             f"reconstruction: {html.escape(proto['reconstruction'])}"]
    if "feature_extractor" in proto:
        warn = "" if proto["feature_extractor_standard"] else " <b>(substitute network: FID not comparable to papers)</b>"
        facts.append(f"FID features: {html.escape(proto['feature_extractor'])}{warn}")
    if "lpips" in proto:
        facts.append(f"LPIPS: {html.escape(proto['lpips'])}")
    facts.append("bits per pixel = log2(codebook size) &times; tokens per image / pixels (all depths of residual codecs)")
    facts.append("usage = fraction of the codebook used over the whole set; perplexity = exp(entropy) of the "
                 "code histogram (multi-level codecs: mean over levels, each level below it)")
    models = "".join(f"<li><b>{html.escape(names[r['model']])}</b>: <code>{html.escape(r['model'])}</code></li>" for r in rows)
    grid_note = ", ".join(html.escape(g) for g in grid_rows)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>movq-bench compare</title>
<style>
body {{ font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1300px;
       color: #222; padding: 0 16px; }}
h1 {{ font-size: 1.5em; }} h2 {{ font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
th {{ background: #f2f2f2; white-space: nowrap; }}
td:first-child, td:nth-child(2), th:first-child, th:nth-child(2) {{ text-align: left; }}
.levels {{ color: #666; font-size: 0.85em; }} .note {{ color: #555; font-size: 0.9em; }}
tr:nth-child(even) td {{ background: #fafafa; }}
img {{ max-width: 100%; border: 1px solid #ddd; }} ul {{ font-size: 0.9em; }} code {{ font-size: 0.95em; }}
</style></head><body>
<h1>movq-bench compare: {len(rows)} codecs, {rows[0]['n_images'] if rows else 0} images at {proto['resolution']} px</h1>
<ul>{"".join(f"<li>{f}</li>" for f in facts)}</ul>
<h2>Results</h2>
<table><thead><tr>{"".join(f"<th>{html.escape(h)}</th>" for h in head)}</tr></thead>
<tbody>{"".join(body)}</tbody></table>
<ul>{models}</ul>
<p>Files: <a href="{FILES['csv']}">{FILES['csv']}</a>, <a href="{FILES['markdown']}">{FILES['markdown']}</a>,
<a href="{FILES['json']}">{FILES['json']}</a></p>
<h2>Rate&ndash;distortion</h2>
<img src="{FILES['plot']}" alt="PSNR and LPIPS against bits per pixel">
<h2>Reconstructions, worst mean PSNR first</h2>
<p class="note">Rows, worst mean PSNR over the codecs first: {grid_note}</p>
<img src="{FILES['grid']}" alt="the same crops reconstructed by every codec">
</body></html>
"""


def _number(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def write_comparison(runner: Any, outcome: dict[str, Any], result: dict[str, Any], out: str | Path,
                     grid_images: int = 8) -> dict[str, Path]:
    """Write every file of :data:`FILES` into ``out`` for a finished run (``runner.run()`` -> ``outcome``,
    ``report.results_json`` -> ``result``); returns ``{kind: path}``."""
    out = Path(out)
    paths = {kind: out / name for kind, name in FILES.items()}
    rows = codec_rows(result)
    names = labels(list(runner.codecs))
    write_json(result, paths["json"])
    atomic_write_text(paths["markdown"], markdown(result))
    write_csv(rows, list(result["protocol"]["metrics"]), names, paths["csv"])
    plot_rate_distortion(rows, names, paths["plot"])
    grid_rows = plot_grid(runner, outcome["stats"], names, grid_images, paths["grid"], runner.cfg.progress)
    atomic_write_text(paths["html"], html_report(result, rows, names, grid_rows))
    return paths
