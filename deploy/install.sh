#!/bin/sh
# Installs torch and this project into the current Python. One script for its three users, so that none of them
# repeats pyproject.toml's dependency list: the README's commands and CI (in a virtual environment),
# cluster.yaml's setup_commands (on every node), and deploy/Dockerfile (baked into the image).
#
#   sh deploy/install.sh             # the project
#   sh deploy/install.sh test        # with extras: test, baseline, test,baseline
set -eu

repo=$(cd "$(dirname "$0")/.." && pwd)
extras=${1:+[$1]}

# - torch is pinned here, not in pyproject.toml (torch>=2.4), so that one version resolves to the CPU build
#   where a local wheel is offered and to PyPI's CUDA build elsewhere. A build of it installed beforehand
#   (e.g. 2.13.0+cu128 from PyTorch's index) satisfies the pin and is kept.
# - Editable (-e): code synced or copied to the same folder later (cluster.yaml's file_mounts, a git pull) is
#   what runs, with no reinstall.
# - Ray comes from pyproject.toml (ray[...]>=2.60,<2.61). In Ray's 2.60 image it is installed already, so pip
#   leaves it as it is and adds only what the image lacks.
python -m pip install "torch==2.13.0" -e "$repo$extras"
