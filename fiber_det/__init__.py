"""fiber-det: FIBER's fine-grained detector and phrase grounder on Detectron2."""
__version__ = "0.1.0"

from . import compat as _compat  # noqa: E402

_compat.ensure_detectron2()

from . import data, modeling  # noqa: E402,F401  (register the datasets, backbone and meta-architecture)
