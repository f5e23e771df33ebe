"""A DetectionCheckpointer that also reads released FIBER checkpoints (converted on the fly) and
never unpickles arbitrary objects."""
import torch
from detectron2.checkpoint import DetectionCheckpointer

from .convert import convert_reference_state_dict, is_reference_state_dict


class FiberCheckpointer(DetectionCheckpointer):
    """``MODEL.WEIGHTS`` may be a fiber-det checkpoint or a released FIBER ``.pth`` (its ``model``
    entry, keys possibly prefixed ``module.``); files are read with ``weights_only=True``."""

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
        return ckpt
