"""``movq-tokenize``: run a codec once over an image collection and store token / latent shards.

Modules: :mod:`~movq.tokenize.sources` (one reader per format: image folders, manifests and imagefolder
metadata, WebDataset tars, parquet, Hugging Face datasets), :mod:`~movq.tokenize.decode`
(worker-side reading), :mod:`~movq.tokenize.encoding` (tokens as ``codec.encode``),
:mod:`~movq.tokenize.meta` (run identity, refusal to mix), :mod:`~movq.tokenize.shards` (atomic
shards, resume, index), :mod:`~movq.tokenize.stats` (codebook usage, histogram),
:mod:`~movq.tokenize.runner` and :mod:`~movq.tokenize.cli`. Read the output with
:class:`movq.tokenize.dataset.TokenDataset`, or rewrite it for other trainers (parquet, WebDataset
shards, LlamaGen's layout, a Hub dataset) with :mod:`~movq.tokenize.export`; generator trainers
tokenize their image collection once through :mod:`~movq.tokenize.training_data`.
"""
