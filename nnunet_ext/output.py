"""The output folder: checked before any work, and written one whole file at a time.

Every file goes to a hidden temporary name in the output folder (ending like the target, so nnU-Net's writers pick
the same format) and is renamed into place once complete, so an error, even mid-write, never leaves a half-written
case file. Only a hard kill can leave a ``.<case>.<pid>.<thread>.partial<file_ending>`` file behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .folders import Dataset


def check_output(out: Path, inputs: list[Path], overwrite: bool) -> None:
    """Create ``out``, or raise ``ValueError``: inside an input folder, a file, not writable, or holding files
    (unless ``overwrite``)."""
    for folder in inputs:
        if out.resolve().is_relative_to(folder.resolve()):
            raise ValueError(f"the output folder {out} is inside the input folder {folder}; inputs are never "
                             "written to: pick an output folder elsewhere")
    if out.exists() and not out.is_dir():
        raise ValueError(f"the output {out} is a file, not a folder")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held and not overwrite:
        listed = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
        raise ValueError(f"the output folder {out} already holds files ({listed}); pass --overwrite to replace "
                         "what rankseg-nnunet writes there, or pick a new folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as err:
        raise ValueError(f"cannot write to the output folder {out}: {err.strerror or err}") from err


@contextlib.contextmanager
def staged(target: Path, ending: str) -> Iterator[Path]:
    """A temporary path beside ``target`` that ends in ``ending``; renamed to ``target`` when the block succeeds,
    removed when it fails."""
    stem = target.name[: -len(ending)] if target.name.endswith(ending) else target.name
    temporary = target.with_name(f".{stem}.{os.getpid()}.{threading.get_ident()}.partial{ending}")
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def write_segmentation(seg: np.ndarray, properties: dict[str, Any], dataset: Dataset, out: Path, case: str) -> Path:
    """Write ``seg`` as nnU-Net does, ``reader_writer().write_seg(seg, out/<case><file_ending>, properties)``
    (so geometry and dtype are nnU-Net's), atomically."""
    target = out / f"{case}{dataset.file_ending}"
    with staged(target, dataset.file_ending) as temporary:
        dataset.reader_writer().write_seg(seg, str(temporary), properties)
    return target


def copy_dataset_files(dataset: Dataset, out: Path) -> None:
    """Copy the ``dataset.json`` and ``plans.json`` in use into ``out``, byte for byte, so nnU-Net's
    postprocessing and evaluation commands find them there (``nnUNetv2_ensemble`` copies no plans.json)."""
    for source, name in ((dataset.dataset_json_file, "dataset.json"), (dataset.plans_file, "plans.json")):
        with staged(out / name, ".json") as temporary:
            shutil.copyfile(source, temporary)
