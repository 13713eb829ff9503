"""Where an export goes, and how it replaces what was there: the destination checked (only an
earlier export of the same format is replaced), the model card and labels beside it checked (only
convnet's own, of this run's export or of one no longer there), and the staged export swapped in
with them, flushed to the disk.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from convnet.errors import ExportError, setting
from convnet.files import replace_durably
from convnet.model_card import CARD_FILE, LABELS_FILE, Export, described_export, run_label
from convnet.runs import Run

FORMATS = {"onnx": "model.onnx", "savedmodel": "saved_model", "litert": "model.tflite"}


def check_quantize(format: str, quantize: str) -> None:
    """Refuses a quantization for another format than LiteRT, the one format quantized."""
    if quantize != "none" and format != "litert":
        raise ExportError(
            f"{setting('quantize', quantize)} is for {setting('format', 'litert')}; "
            f"received {format}."
        )


def destination(out: Path, format: str) -> Path:
    """Where the export goes; refuses to replace anything that is not an earlier export.

    An ONNX or LiteRT export into a folder, existing or new (a name without a suffix: `--out
    exports/` must not become a file named `exports`), is written inside it (`model.onnx`,
    `model.tflite`), and replaces only a file of its suffix; a SavedModel replaces only a folder
    holding an earlier SavedModel. A new file is named with its format's suffix: a LiteRT file
    written as `model.onnx` would be read as ONNX by the next tool.
    """
    suffixes = {Path(name).suffix for name in FORMATS.values()} - {""}
    if format != "savedmodel":
        if out.is_dir() or not (out.suffix or out.exists() or out.is_symlink()):
            out = out / FORMATS[format]
        suffix = Path(FORMATS[format]).suffix
        if out.suffix.lower() != suffix and not (out.exists() or out.is_symlink()):
            raise ExportError(
                f"{out}: {format} exports are {suffix} files; pass {setting('out')} ending in "
                f"{suffix}, or a folder."
            )
        if (out.exists() or out.is_symlink()) and (out.is_dir() or out.suffix.lower() != suffix):
            raise ExportError(
                f"{out}: exists and is not a {suffix} file; pass {setting('out')} that is new, a "
                f"folder, or an earlier {suffix} export."
            )
        return out
    if out.suffix.lower() in suffixes:
        raise ExportError(
            f"{out}: a SavedModel is a folder, and this name is a {out.suffix} file's; pass "
            f"another {setting('out')} (a folder)."
        )
    if (out.exists() or out.is_symlink()) and not (out / "saved_model.pb").is_file():
        raise ExportError(
            f"{out}: exists and is not a SavedModel; pass {setting('out')} that is new or an "
            "earlier SavedModel export."
        )
    return out


def staging_folder(out: Path) -> Path:
    """A new folder beside `out` to export into, then rename from: a reader never sees half an
    export.

    Raises:
        ExportError: `out`'s folder cannot be made or written.
    """
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    except FileExistsError:  # mkdir's answer when the parent is a file
        raise ExportError(f"{out}: cannot write there ({out.parent} is a file).") from None
    except OSError as error:
        raise ExportError(f"{out}: cannot write there ({error.strerror}).") from None


def check_beside(run: Run, out: Path, record: Export) -> None:
    """Refuses to replace, beside a file export, a MODEL_CARD.md that no export wrote or that
    describes another run's export still there, or a labels.txt naming other classes that is
    not only the earlier export's at `out`: either would leave a model there described or
    labelled wrongly.

    Raises:
        ExportError: naming the file.
    """
    if record.format == "savedmodel":  # its card goes inside its own folder
        return
    card = out.parent / CARD_FILE
    described = described_export(_text(card)) if card.is_file() else None
    if (card.exists() or card.is_symlink()) and described is None:
        raise ExportError(
            f"{card}: exists and was not written by convnet export; pass {setting('out')} in "
            "another folder, or move it."
        )
    other = out.parent / str((described or {}).get("file"))
    another_run = described is not None and described.get("run") != run_label(run)
    if another_run and other != out and other.exists():
        raise ExportError(
            f"{card}: describes {other.name} of run {described.get('run')} beside it; pass "
            f"{setting('out')} in another folder."
        )
    labels = out.parent / LABELS_FILE
    if record.format == "litert" and labels.exists():
        ours = labels.is_file() and _text(labels) == labels_text(record)
        if not ours and set(out.parent.glob("*.tflite")) != {out}:
            raise ExportError(
                f"{labels}: exists and names other classes, for another model or none of "
                f"convnet's; pass {setting('out')} in another folder."
            )


def labels_text(record: Export) -> str:
    return "".join(f"{name}\n" for name in record.class_names)


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def swap_in(new: Path, out: Path, aside: Path, beside: list[tuple[Path, Path]]) -> None:
    """Renames `new` to `out`, flushed to the disk; an earlier export folder there goes `aside`
    first, and back on failure. The files of `beside` go first, each to its name: a reader that
    finds the new model finds its labels and card with it."""
    for staged, name in beside:
        replace_durably(staged, name)
    if not out.is_dir():
        replace_durably(new, out)  # atomic for a file, whether or not one was there
        return
    os.replace(out, aside)
    try:
        replace_durably(new, out)
    except OSError:
        os.replace(aside, out)
        raise
