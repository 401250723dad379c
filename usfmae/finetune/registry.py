"""The allowed values of fine-tuning, each defined once: downstream datasets and fine-tune models.

Config types (classification/config.py), the adapters, the protocol, the Table 2 report and the baseline
builder all read these tables; adding a dataset or a model starts here.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class DownstreamDataset:
    title: str  # its name in Table 2
    classes: tuple[str, ...]  # class order: label index i is classes[i]
    positive_class: str | None  # positive class of a binary task (binary P/R/F1); None for multi-class


DOWNSTREAM: dict[str, DownstreamDataset] = {
    "busbra": DownstreamDataset("BUS-BRA", ("benign", "malignant"), "malignant"),
    "mmotu": DownstreamDataset("MMOTU-2D", (
        "chocolate cyst",
        "serous cystadenoma",
        "teratoma",
        "theca cell tumor",
        "simple cyst",
        "normal ovary",
        "mucinous cystadenoma",
        "high grade serous cystadenocarcinoma",
    ), None),
    "gist514": DownstreamDataset("GIST514-DB", ("GIST", "leiomyoma"), "GIST"),
}


@dataclass(frozen=True)
class FinetuneModel:
    title: str  # its name in Table 2
    timm_baseline: bool  # built by timm (classification/baselines.py), weights from a local file


MODELS: dict[str, FinetuneModel] = {
    "usfmae": FinetuneModel("USF-MAE", False),
    "vgg19": FinetuneModel("VGG-19", True),
    "resnet50": FinetuneModel("ResNet-50", True),
    "vit_base_patch16_224": FinetuneModel("ViT-B/16", True),
    "small_cnn": FinetuneModel("small_cnn", False),
}
