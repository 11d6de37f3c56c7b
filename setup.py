"""Build hook: ship the dashboards and alert rules inside the wheel.

They live at the repository's top level (dashboards/, alerts/) so that docker-compose and
promtool use them in place; a wheel copies them to ``prepwatch/dashboards`` and
``prepwatch/alerts`` so ``prepwatch dashboards push`` works from a plain ``pip install``.
Everything else is declared in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
ASSETS = {"dashboards": "*.json", "alerts": "*.rules.yml"}


class BuildPyWithAssets(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads them from the checkout
        for folder, pattern in ASSETS.items():
            target = Path(self.build_lib) / "prepwatch" / folder
            target.mkdir(parents=True, exist_ok=True)
            for path in sorted((ROOT / folder).glob(pattern)):
                shutil.copyfile(path, target / path.name)


setup(cmdclass={"build_py": BuildPyWithAssets})
