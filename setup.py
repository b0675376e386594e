"""Installs the packages ``d2ext`` (shared machinery) and ``d2ext_projects`` (the methods).

The methods live in the folder ``projects/`` and are imported as
``d2ext_projects.<method>`` (a bare ``projects`` would be shadowed by any
``projects/`` folder on ``sys.path``, such as detectron2's source tree).
Dependencies and their versions live in tools/requirements.txt; `make` installs them.
"""
from setuptools import find_packages, setup

METHOD_PACKAGES = ["d2ext_projects"] + [f"d2ext_projects.{p}" for p in find_packages("projects")]

setup(
    name="d2ext",
    version="0.2.0",
    description="Segmentation methods (PointRend, MaskFormer, AdaptIS, ICNet, R2O) on Detectron2",
    python_requires=">=3.9",
    packages=find_packages(include=["d2ext", "d2ext.*"]) + METHOD_PACKAGES,
    package_dir={"d2ext_projects": "projects"},
)
