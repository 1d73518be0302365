"""The option vocabulary every command shares: one definition, one default, one meaning per option.

Data (`--data`, `--text-column`, `--label-column`, `--on-bad-input`) and backbone (`--model`, `--pooling`,
`--image-size`, `--max-length`, `--device`, `--precision`, `--random-init`, `--trust-pickle`,
`--trust-remote-code`) options are declared here once and turned into library calls by `DataArgs` and
`BackboneArgs`, so `extract`, `finetune`, `compare` and the rest read the same flags the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import typer

from transferkit.errors import DataError, TransferkitError

# ---- data ------------------------------------------------------------------------------------------------------
DataOpt = Annotated[str, typer.Option(
    "--data", "-d", help="Image folder (one subfolder per class), table (.csv/.tsv/.parquet/.jsonl), Hugging Face "
    "datasets folder (save_to_disk), WebDataset .tar shards (a file or a folder of them) or bundled:NAME.")]
TextColumnOpt = Annotated[str, typer.Option("--text-column", help="Text column of a table.")]
LabelColumnOpt = Annotated[str | None, typer.Option(
    "--label-column", help="Label column of a table (default: the column `label` when the table has one).")]
OnBadInputOpt = Annotated[str, typer.Option(
    "--on-bad-input", help="fail: stop at the first unreadable image or empty row, naming it; skip: leave such "
    "items out and list them.")]

# ---- backbone --------------------------------------------------------------------------------------------------
ModelOpt = Annotated[str | None, typer.Option(
    "--model", "-m", help="Backbone spec: effnet:lite0, timm:NAME, tv:NAME, hf:ID_OR_PATH, st:ID_OR_PATH, "
    "run:FOLDER. Default: effnet:lite0 for images, st:all-MiniLM-L6-v2 for text.")]
PoolingOpt = Annotated[str, typer.Option("--pooling", help="default, mean, cls, pooler, or layer:NAME.")]
ImageSizeOpt = Annotated[int | None, typer.Option("--image-size", help="Input resolution of image models.")]
MaxLengthOpt = Annotated[int | None, typer.Option("--max-length", help="Token limit of text models.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda, cuda:N or mps.")]
PrecisionOpt = Annotated[str, typer.Option(
    "--precision", help="auto, fp32 or bf16 (extraction and feature-route predictions also int8: linear layers "
    "quantised, CPU). auto: bf16 where the device runs it natively and faster; for a model folder, the precision "
    "it was trained in.")]
RandomInitOpt = Annotated[bool, typer.Option("--random-init", help="The architecture with random weights (speed "
                                             "tests, training from scratch).")]
TrustPickleOpt = Annotated[bool, typer.Option(
    "--trust-pickle", help="Accept pickle-based weight files (.pt/.pth/.bin/.ckpt; read with weights_only): "
    "unpickling can execute code, so only for files from a source you trust. Never recorded in a model folder.")]
TrustRemoteCodeOpt = Annotated[bool, typer.Option("--trust-remote-code", help="Let Hugging Face run Python code "
                                                  "from the model repository.")]

# ---- shared by many commands -----------------------------------------------------------------------------------
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of splits, sampling and training: the same seed gives "
                                      "the same numbers.")]
ValOpt = Annotated[float, typer.Option("--val", help="Validation fraction (hyperparameters and early stopping are "
                                       "chosen on it).")]
TestOpt = Annotated[float, typer.Option("--test", help="Test fraction (reported, never used to choose).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
SampleOpt = Annotated[int | None, typer.Option("--sample", help="Work on a class-stratified subset of this many "
                                               "items.")]


@dataclass
class DataArgs:
    """The data options of a command, turned into a `Dataset`."""

    data: str
    text_column: str = "text"
    label_column: str | None = None
    on_bad_input: str = "fail"

    def load(self, labels: str = "optional", *, flag: str = "--data") -> Any:
        """The data set; labels "required" (an error names the fix when there are none), "optional" or "none"
        (a table's label column is not read)."""
        from transferkit.data import load_data
        from transferkit.data.loaders import AUTO, check_on_bad_input, has_columns

        check_on_bad_input(self.on_bad_input)
        kw: dict[str, Any] = {}
        table = not self.data.startswith("bundled:") and has_columns(self.data)
        if table:
            kw = {"text_column": self.text_column,
                  "label_column": None if labels == "none" else (self.label_column or AUTO)}
        if not self.data.startswith("bundled:"):
            kw["on_bad_input"] = self.on_bad_input
        ds = load_data(self.data, **kw)
        # where the data came from, for model folders (so `export` can find a model's own test split again)
        ds.meta.update(spec=self.data, text_column=kw.get("text_column"), label_column=kw.get("label_column"))
        if labels == "required" and ds.labels is None:
            fix = ("the table has no `label` column: name yours with --label-column" if table and not
                   self.label_column else "give an image folder with one subfolder per class")
            raise DataError(f"{flag} {self.data} has no labels, and this command needs them: {fix}")
        return ds


@dataclass
class BackboneArgs:
    """The backbone options of a command, turned into a `Backbone` (and the precision to run it in)."""

    model: str | None = None
    pooling: str = "default"
    image_size: int | None = None
    max_length: int | None = None
    device: str = "auto"
    precision: str = "auto"
    random_init: bool = False
    trust_pickle: bool = False
    trust_remote_code: bool = False

    def spec(self, modality: str) -> str:
        """The model spec, or the default backbone of the data's modality."""
        from transferkit.backbones import DEFAULT_IMAGE, DEFAULT_TEXT

        return self.model or (DEFAULT_TEXT if modality == "text" else DEFAULT_IMAGE)

    def build_options(self) -> dict:
        """The build options that differ from their defaults (what a model folder records to rebuild it)."""
        from transferkit.backbones import build_options

        return build_options(pretrained=not self.random_init, pooling=self.pooling, image_size=self.image_size,
                             max_length=self.max_length)

    def known_identity(self, modality: str) -> dict | None:
        """The backbone's identity from the record of an earlier build from the same files, without building it
        (`transferkit.backbones.stamps`); None when there is no such record."""
        from transferkit.backbones.stamps import known_identity

        return known_identity(self.spec(modality), trust_pickle=self.trust_pickle,
                              trust_remote_code=self.trust_remote_code, **self.build_options())

    def load(self, modality: str) -> Any:
        """Build the backbone on the chosen device; a bad precision fails here too, before any model work."""
        from transferkit.backbones import load_backbone
        from transferkit.runtime import INFERENCE_PRECISIONS

        if self.precision not in INFERENCE_PRECISIONS:
            raise TransferkitError(f"--precision {self.precision!r}: use one of {', '.join(INFERENCE_PRECISIONS)}")
        return load_backbone(self.spec(modality), device=self.device, trust_pickle=self.trust_pickle,
                             trust_remote_code=self.trust_remote_code, **self.build_options())


def given(ctx: typer.Context) -> set[str]:
    """Names of the parameters the user set on the command line (not left at their defaults)."""
    return {name for name in ctx.params
            if getattr(ctx.get_parameter_source(name), "name", "") in ("COMMANDLINE", "ENVIRONMENT")}
