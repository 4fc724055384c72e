"""repro: reproduction artifact for "Does progress on ImageNet transfer to real-world datasets?".

Start with `repro --help`; the whole embedded study runs with `dvc repro` (or `make reproduce`).
"""

__version__ = "0.1.0"
