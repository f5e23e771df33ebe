import re
from pathlib import Path

from setuptools import find_packages, setup

# Read, not imported: importing fiber_det needs detectron2, which need not be installed yet.
_init = (Path(__file__).parent / "fiber_det" / "__init__.py").read_text()
_version = re.search(r'^__version__ = "([^"]+)"', _init, re.M).group(1)

setup(
    name="fiber-det",
    version=_version,
    packages=find_packages(include=["fiber_det*"]),
    package_data={"fiber_det.compat": ["README.md"]},
    python_requires=">=3.10",
)
