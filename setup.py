"""Packaging for torchsparse_lite.

The top-level folders ``kernels/`` and ``datasets/`` are installed as the
subpackages ``torchsparse_lite.kernels`` and ``torchsparse_lite.datasets``;
no top-level ``kernels`` or ``datasets`` package is ever installed (both names
clash with well-known PyPI distributions).
"""

from setuptools import find_packages, setup


def _subpackages(folder: str, prefix: str) -> list[str]:
    return [prefix] + [f"{prefix}.{p}" for p in find_packages(folder)]


packages = (
    ["torchsparse_lite"]
    + [f"torchsparse_lite.{p}" for p in find_packages("torchsparse_lite")]
    + _subpackages("kernels", "torchsparse_lite.kernels")
    + _subpackages("datasets", "torchsparse_lite.datasets")
)

setup(
    name="torchsparse_lite",
    version="0.1.0",
    description="Point-cloud sparse convolution engine for PyTorch (pure Python + Triton)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=packages,
    package_dir={
        "torchsparse_lite": "torchsparse_lite",
        "torchsparse_lite.kernels": "kernels",
        "torchsparse_lite.datasets": "datasets",
    },
    install_requires=[
        "torch>=2.1,<2.15",
        "numpy>=1.24",
        "triton>=3.0",
        "tqdm>=4.60",
        "matplotlib>=3.7",
    ],
    extras_require={
        "dev": ["pytest>=7", "hypothesis>=6", "ruff>=0.4", "spconv==2.3.8"],
        "viz": ["open3d==0.20.*", "matplotlib>=3.7"],
    },
    entry_points={"console_scripts": ["torchsparse-lite=torchsparse_lite.__main__:main"]},
)
