from .checkpointer import FiberCheckpointer
from .convert import (
    PREFIX_MAP,
    convert_reference_state_dict,
    is_reference_state_dict,
    load_reference_checkpoint,
)

__all__ = ["FiberCheckpointer", "PREFIX_MAP", "convert_reference_state_dict", "is_reference_state_dict", "load_reference_checkpoint"]
