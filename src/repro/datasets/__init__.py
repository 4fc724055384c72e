"""The dataset registry: one DatasetSpec per dataset, carrying classes, metric, splits and augmentation.

Each on-disk format has its own module (`generic` reads the image folder/CSV format; `embedded` writes the digits
that ship inside scikit-learn into it; `cct20`, `aptos`, `hpa`, `melanoma`, `cassava` and `eurosat` read the six
published raw layouts, with the authors' split rules in `rules` and the shared checks in `raw`). Importing this
package does not import torch. Exercised by `repro data prepare digits` and `repro data verify NAME`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from repro.registry import Registry


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    display: str
    classes: tuple[str, ...]  # in the order the label ids use
    metric: str  # a key of repro.metrics.METRICS
    select_split: str  # split that picks the epoch and the config
    report_split: str  # split whose metric is reported
    image_size: int  # model input size (the paper's: 256, EuroSAT 224)
    crop_scale: tuple[float, float] = (0.65, 1.0)  # RandomResizedCrop scale (PAPER.md section 4)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # RandomResizedCrop aspect range (torchvision's default, the
    # authors' too: their datasets/*.py pass only scale)
    hflip: bool = True
    vflip: bool = False
    multilabel: bool = False
    embedded: bool = False  # ships inside a pip package: nothing to download
    source: str = ""
    license: str = ""
    fetch_hint: str = ""  # how to obtain the raw data by hand, until `repro data fetch` does it
    raw_format: str = ""  # module under repro.datasets that reads the published raw layout and splits it
    # The authors' loader reads with cv2.imread and never converts BGR to RGB (PAPER.md section 4): CCT-20,
    # APTOS, HPA, Melanoma. `finetune.channel_order: bgr` reproduces that for these datasets only.
    opencv_read: bool = False
    # The authors' loader reads with cv2.imread, which applies a JPEG's EXIF orientation (CCT-20, APTOS, HPA,
    # Melanoma, Cassava; EuroSAT is read by PIL, which does not). `finetune.exif: authors` follows this flag.
    reader_applies_exif: bool = False
    root: str = ""  # a user's own dataset (repro.datasets.own): the folder its image ids are relative to

    @property
    def num_classes(self) -> int:
        return len(self.classes)


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def _kaggle(kind: str, slug: str, name: str) -> str:
    if kind == "competition":
        return (f"accept the rules at https://www.kaggle.com/competitions/{slug}/rules, then `repro data fetch "
                f"{name}` (Kaggle API token in ~/.kaggle/kaggle.json), or download it by hand and unzip into "
                f"data/raw/{name}")
    return (f"`repro data fetch {name}` (Kaggle API token in ~/.kaggle/kaggle.json), or download "
            f"https://www.kaggle.com/datasets/{slug} by hand and unzip into data/raw/{name}/{slug.split('/')[1]}")


# The six datasets of the paper (PAPER.md section 3). Classes in the authors' order; "heldout" is the authors'
# single held-out split, used both to select and to report (their loaders return only train and one split).
for _spec in (
    DatasetSpec("cct20", "CCT-20", tuple(str(c) for c in (1, 3, 5, 6, 7, 8, 9, 10, 11, 16, 21, 33, 34, 51, 99)),
                "accuracy", "cis_val", "cis_test", 256, opencv_read=True, reader_applies_exif=True,
                source="LILA Caltech Camera Traps, ECCV'18 subset (eccv_18_annotation_files, eccv_18_all_images_sm)",
                license="CDLA-Permissive-1.0 (LILA)",
                fetch_hint="`repro data fetch cct20`, or download the ECCV'18 annotation files and images "
                           "from LILA (lila.science, Caltech Camera Traps) and unpack into data/raw/cct20"),
    DatasetSpec("aptos", "APTOS 2019", tuple("01234"), "quadratic_kappa", "heldout", "heldout", 256, opencv_read=True,
                reader_applies_exif=True,
                source="Kaggle competition aptos2019-blindness-detection", license="Kaggle competition rules",
                fetch_hint=_kaggle("competition", "aptos2019-blindness-detection", "aptos")),
    DatasetSpec("hpa", "Human Protein Atlas", tuple(str(i) for i in range(28)), "macro_f1", "val", "test_val",
                256, vflip=True, multilabel=True, opencv_read=True, reader_applies_exif=True,
                source="Kaggle competition human-protein-atlas-image-classification",
                license="Kaggle competition rules",
                fetch_hint=_kaggle("competition", "human-protein-atlas-image-classification", "hpa")),
    DatasetSpec("melanoma", "SIIM-ISIC Melanoma", ("0", "1"), "roc_auc", "heldout", "heldout", 256, vflip=True,
                opencv_read=True, reader_applies_exif=True,
                source="Kaggle datasets cdeotte/jpeg-melanoma-512x512 and cdeotte/jpeg-isic2019-512x512",
                license="CC BY-NC 4.0 (ISIC archive)",
                fetch_hint=_kaggle("dataset", "cdeotte/jpeg-melanoma-512x512", "melanoma") + "; likewise "
                           "cdeotte/jpeg-isic2019-512x512"),
    DatasetSpec("cassava", "Cassava Leaf Disease", tuple("01234"), "accuracy", "heldout", "heldout", 256,
                vflip=True, reader_applies_exif=True, source="Kaggle competition cassava-leaf-disease-classification",
                license="Kaggle competition rules",
                fetch_hint=_kaggle("competition", "cassava-leaf-disease-classification", "cassava")),
    DatasetSpec("eurosat", "EuroSAT (RGB)", ("AnnualCrop", "Forest", "HerbaceousVegetation", "Highway",
                "Industrial", "Pasture", "PermanentCrop", "Residential", "River", "SeaLake"), "accuracy",
                "heldout", "heldout", 224, hflip=False, source="EuroSAT.zip (RGB, 27,000 64x64 images)",
                license="MIT", fetch_hint="`repro data fetch eurosat`, or download EuroSAT.zip (RGB) and unzip "
                                          "so that data/raw/eurosat/2750/ holds the class folders"),
):
    DATASETS.register(_spec.name, replace(_spec, raw_format=_spec.name))  # one reader module per dataset

DATASETS.register(
    "digits",
    DatasetSpec(
        name="digits",
        display="Digits (embedded)",
        classes=tuple(str(d) for d in range(10)),
        metric="accuracy",
        select_split="val",
        report_split="test",
        # 8x8 sources upscaled to the smallest size every registered CNN accepts (32x downsampling).
        image_size=32,
        hflip=False,  # a mirrored digit is another symbol
        embedded=True,
        source="scikit-learn sklearn.datasets.load_digits (UCI optdigits test set, 1,797 images)",
        license="CC BY 4.0",
    ),
)
