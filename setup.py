"""Package discovery: each top-level folder is one layer of the ``posed`` namespace.

``pyproject.toml`` holds the metadata; this file only maps the folders onto ``posed.*`` and
finds every sub-package in them, so a new sub-package is never left out of a wheel.
"""

from setuptools import find_packages, setup

LAYERS = {"posed": "posed", "posed.daemon": "daemon", "posed.engines": "engines",
          "posed.exporters": "exporters"}

packages = []
for name, folder in LAYERS.items():
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir=LAYERS)
