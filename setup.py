"""Package list and package data that pyproject.toml cannot express: the top-level ``conf/`` folder is
installed as ``ghrs/conf`` (Hydra's config folder for an installed, non-editable package)."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
CONF_PACKAGES = ["ghrs.conf"] + sorted(
    "ghrs.conf." + ".".join(d.relative_to(HERE / "conf").parts)
    for d in (HERE / "conf").rglob("*") if d.is_dir() and any(d.glob("*.yaml"))
)

setup(
    packages=find_packages(include=["ghrs*", "ssm*", "kernels*"]) + CONF_PACKAGES,
    package_dir={"ghrs.conf": "conf"},
    package_data={name: ["*.yaml"] for name in CONF_PACKAGES},
)
