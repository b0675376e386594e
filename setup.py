"""Installs the packages ``d2ext`` (shared machinery) and ``projects`` (the methods).

Dependencies and their versions live in tools/requirements.txt; `make` installs them.
"""
from setuptools import find_packages, setup

setup(
    name="d2ext",
    version="0.1.0",
    description="Segmentation methods (PointRend, MaskFormer, AdaptIS, ICNet, R2O) on Detectron2",
    python_requires=">=3.9",
    packages=find_packages(include=["d2ext", "d2ext.*", "projects", "projects.*"]),
)
