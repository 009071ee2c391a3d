"""Training codecs with the SBER-MoVQGAN recipe: ``movq-train`` / :class:`Trainer`.

Modules: ``config`` (:class:`CodecTrainConfig`, the codec recipe), ``data`` (image folder, resumable
sampler), ``losses`` (recipe terms, PatchGAN, hinge), ``ema``, ``checkpoint``, ``logs``, ``loop``, ``trainer``,
``cli``; process groups come from :mod:`movq.distributed`.
"""

from movq.train.config import CodecTrainConfig

__all__ = ["CodecTrainConfig", "Trainer", "train"]


def __getattr__(name: str):  # lazy: importing movq.train stays cheap
    if name == "Trainer":
        from movq.train.trainer import Trainer

        return Trainer
    if name == "train":
        from movq.train.trainer import train

        return train
    if name == "TrainConfig":  # deprecated alias of CodecTrainConfig (warns)
        from movq.train import config

        return config.TrainConfig
    raise AttributeError(name)
