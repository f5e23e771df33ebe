"""A DetectionCheckpointer that also reads released FIBER checkpoints (converted on the fly), never
unpickles arbitrary objects, and writes checkpoints atomically."""
import os
from typing import Any

import torch
from detectron2.checkpoint import DetectionCheckpointer

from .convert import convert_reference_state_dict, is_reference_state_dict


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. a platform without directory file descriptors
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, write_fn, mode: str = "wb") -> None:
    """Write ``path`` via a temporary file in the same folder, fsync, then ``os.replace``: a reader
    (or a resumed run) sees the old file or the complete new one, never a torn one."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(folder)


class FiberCheckpointer(DetectionCheckpointer):
    """``MODEL.WEIGHTS`` may be a fiber-det checkpoint or a released FIBER ``.pth`` (its ``model``
    entry, keys possibly prefixed ``module.``); files are read with ``weights_only=True``.

    With ``use_ema_weights``, a checkpoint that holds an ``ema`` entry (MODEL_EMA.ENABLED runs) loads
    those averaged weights as the model. Saving writes ``NAME.pth`` and ``last_checkpoint`` atomically
    (local folders only).
    """

    def __init__(self, model, save_dir: str = "", *, use_ema_weights: bool = False, **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.use_ema_weights = use_ema_weights

    @classmethod
    def for_inference(cls, model, cfg, save_dir: str = "") -> "FiberCheckpointer":
        """The checkpointer evaluation and demos load weights with: EMA weights when the config trains
        with an EMA and evaluates it (MODEL_EMA.ENABLED and MODEL_EMA.USE_FOR_EVAL)."""
        return cls(model, save_dir, use_ema_weights=bool(cfg.MODEL_EMA.ENABLED and cfg.MODEL_EMA.USE_FOR_EVAL))

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {path}")
        os.makedirs(self.save_dir, exist_ok=True)
        atomic_write(path, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write(os.path.join(self.save_dir, "last_checkpoint"), lambda f: f.write(last_filename_basename), "w")

    def _load_file(self, filename):
        if not filename.endswith((".pth", ".pt")):
            # Detectron2 would unpickle .pkl/.pyth files, which can execute code.
            raise ValueError(f"{filename}: fiber-det reads only .pth/.pt checkpoints (loaded with weights_only=True)")
        ckpt = torch.load(filename, map_location="cpu", weights_only=True)
        if not isinstance(ckpt, dict):
            raise ValueError(f"{filename}: expected a dict checkpoint, got {type(ckpt).__name__}")
        state = ckpt.get("model", ckpt)
        if is_reference_state_dict(state):
            converted, unplaced = convert_reference_state_dict(state)
            if unplaced:
                self.logger.warning(f"{filename}: {len(unplaced)} keys could not be placed: {unplaced[:20]}")
            self.logger.info(f"{filename}: converted a reference FIBER checkpoint ({len(converted)} tensors)")
            return {"model": converted, "__author__": "FIBER reference", "matching_heuristics": False}
        if "model" not in ckpt:
            ckpt = {"model": ckpt}
        if self.use_ema_weights and "ema" in ckpt:
            self.logger.info(f"{filename}: loading its EMA weights as the model")
            ckpt["model"] = ckpt.pop("ema")
        return ckpt
