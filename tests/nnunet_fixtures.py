"""Tiny nnU-Net v2 prediction folders written by nnU-Net's own code, as ``nnUNetv2_predict --save_probabilities``
writes them.

For each dataset (label-based ``labels``; region-based ``regions``, KiTS23's label dict with ``regions_class_order``
``[1, 3, 2]`` and a non-identity ``transpose_forward``), :func:`build_dataset` writes::

    ROOT/<key>/raw/imagesTs/<case>_0000.nii.gz    images with a zero border, so nnU-Net crops them
    ROOT/<key>/raw/labelsTr/<case>.nii.gz         ground truth blobs: 1 organ, 2 tumour, 3 cyst (regions only)
    ROOT/<key>/raw/dataset.json, plans.json
    ROOT/<key>/pred_<m>/<case>.nii.gz|.npz|.pkl   + dataset.json, plans.json, predict_from_raw_data_args.json

The pipeline is nnUNetv2_predict's: ``DefaultPreprocessor.run_case`` (transpose, crop, resample: the real
properties) -> float16 logits on the preprocessed grid (what the predictor hands its export workers; here sure far
from a boundary, noisy near it) -> ``export_prediction_from_logits(..., save_probabilities=True)``. Cases:
``case_000`` 32³ 1 mm identity; ``case_001`` 32 x 32 x 20 at (0.8, 0.8, 2.5) mm, rotated 30° about z with z flipped,
non-zero origin (the logits really are resampled, with separate z); ``case_002`` 28 x 32 x 30 at (1, 1.2, 1) mm with
no tumour in its truth. The models differ only in their noise, so the folders form an ensemble.
"""

from __future__ import annotations

import pickle
from copy import deepcopy
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from nnunetv2.inference.export_prediction import export_prediction_from_logits
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from scipy.ndimage import distance_transform_edt, gaussian_filter

FILE_ENDING = ".nii.gz"
DATASETS = {
    "labels": dict(name="Dataset990_FakeLabels", labels={"background": 0, "liver": 1, "tumor": 2},
                   regions_class_order=None, transpose_forward=[0, 1, 2]),
    "regions": dict(name="Dataset991_FakeKiTS", labels={"background": 0, "kidney": [1, 2, 3], "masses": [2, 3],
                                                        "tumor": 2},
                    regions_class_order=[1, 3, 2], transpose_forward=[2, 0, 1]),
}
_c, _s = np.cos(np.pi / 6), np.sin(np.pi / 6)
CASES = [  # name, size (x, y, z) as SimpleITK sees it, spacing (x, y, z), direction (row-major), origin
    ("case_000", (32, 32, 32), (1.0, 1.0, 1.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (0.0, 0.0, 0.0)),
    ("case_001", (32, 32, 20), (0.8, 0.8, 2.5), (_c, -_s, 0, _s, _c, 0, 0, 0, -1), (-12.5, 40.0, 7.25)),
    ("case_002", (28, 32, 30), (1.0, 1.2, 1.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (5.0, -3.0, 1.0)),
]
CASE_IDS = [c[0] for c in CASES]
_RESAMPLING = "resample_data_or_seg_to_shape"


def plans(key: str, reader: str = "SimpleITKIO") -> dict:
    """Minimal plans: what PlansManager, the preprocessor and export_prediction_from_logits read."""
    tf = DATASETS[key]["transpose_forward"]
    return {
        "dataset_name": DATASETS[key]["name"], "plans_name": "nnUNetPlans",
        "image_reader_writer": reader, "label_manager": "LabelManager",
        "transpose_forward": tf, "transpose_backward": [int(i) for i in np.argsort(tf)],
        "foreground_intensity_properties_per_channel": {"0": {}},
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "patch_size": [32, 32, 32], "spacing": [1.0, 1.0, 1.0],
            "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False],
            "resampling_fn_data": _RESAMPLING,
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg": _RESAMPLING,
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": _RESAMPLING,
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
            "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                             "arch_kwargs": {}, "_kw_requires_import": []},  # only its presence matters here
        }},
    }


def dataset_json(key: str) -> dict:
    d = {"channel_names": {"0": "CT"}, "labels": DATASETS[key]["labels"], "numTraining": len(CASES),
         "file_ending": FILE_ENDING}
    if DATASETS[key]["regions_class_order"] is not None:
        d["regions_class_order"] = DATASETS[key]["regions_class_order"]
    return d


def _save_json(obj: dict, path: Path, sort_keys: bool = False) -> None:
    from batchgenerators.utilities.file_and_folder_operations import save_json

    save_json(obj, str(path), sort_keys=sort_keys)


def _ball(shape, center, radii):
    g = np.indices(shape, dtype=np.float32)
    return sum(((g[i] - center[i]) / radii[i]) ** 2 for i in range(3)) <= 1


def _case_arrays(shape_zyx, with_tumor, rng):
    img = np.zeros(shape_zyx, np.float32)
    img[2:-2, 3:-1, 1:-3] = rng.normal(100, 10, (shape_zyx[0] - 4, shape_zyx[1] - 4, shape_zyx[2] - 4))
    ctr, size = np.array(shape_zyx) / 2, np.array(shape_zyx)
    gt = _ball(shape_zyx, ctr, size * 0.3).astype(np.uint8)
    if with_tumor:
        gt[_ball(shape_zyx, ctr + size * 0.08, size * 0.12)] = 2
    gt[_ball(shape_zyx, ctr - size * 0.12, size * 0.07)] = 3
    return img, gt


def _write_image(arr_zyx, path, spacing, direction, origin):
    im = sitk.GetImageFromArray(arr_zyx)
    im.SetSpacing(spacing), im.SetDirection(direction), im.SetOrigin(origin)
    sitk.WriteImage(im, str(path), True)


def _signed_distance(mask: np.ndarray) -> np.ndarray:
    """Voxels to the mask's boundary, positive inside; -inf everywhere for an empty mask."""
    if not mask.any():
        return np.full(mask.shape, -np.inf)
    return distance_transform_edt(mask) - distance_transform_edt(~mask)


def _fake_logits(seg, label_manager, rng):
    """Float16 logits that agree with ``seg`` on the preprocessed grid: sure far from a boundary, unsure near it
    (as a trained network's), plus smooth noise."""
    seg = np.maximum(seg, 0)  # crop_to_nonzero marks voxels outside the nonzero mask with -1
    if label_manager.has_regions:
        targets = [np.isin(seg, np.atleast_1d(r)) for r in label_manager.foreground_regions]
    else:
        targets = [seg == label for label in label_manager.all_labels]
    noise = gaussian_filter(rng.normal(size=(len(targets), *seg.shape)), sigma=(0, 1, 1, 1)) * 4
    sure = np.stack([np.clip(1.5 * _signed_distance(t), -9, 9) for t in targets])
    return (sure + noise).astype(np.float16)


def build_dataset(root: Path, key: str, n_models: int = 2, seed: int = 0, reader: str = "SimpleITKIO") -> Path:
    """Write dataset ``key`` under ``root/key`` (see the module docstring) with the plans' ``image_reader_writer``
    ``reader``; return that folder."""
    base = Path(root) / key
    images, labels = base / "raw" / "imagesTs", base / "raw" / "labelsTr"
    images.mkdir(parents=True), labels.mkdir(parents=True)
    p, d = plans(key, reader), dataset_json(key)
    _save_json(p, base / "raw" / "plans.json")
    _save_json(d, base / "raw" / "dataset.json")
    pm = PlansManager(p)
    cm, lm = pm.get_configuration("3d_fullres"), pm.get_label_manager(d)
    pre = DefaultPreprocessor(verbose=False)
    rng = np.random.default_rng(seed)
    preprocessed = []
    for name, size, spacing, direction, origin in CASES:
        img, gt = _case_arrays(size[::-1], with_tumor=name != "case_002", rng=rng)
        if not DATASETS[key]["regions_class_order"]:
            gt[gt == 3] = 1  # the label-based dataset has no cyst label
        img_file, gt_file = images / f"{name}_0000{FILE_ENDING}", labels / f"{name}{FILE_ENDING}"
        _write_image(img, img_file, spacing, direction, origin)
        _write_image(gt, gt_file, spacing, direction, origin)
        # the truth goes in only to get it on the preprocessed grid for the fake logits; the properties are
        # nnUNetv2_predict's apart from 'class_locations', which run_case adds when given a segmentation
        _, seg, props = pre.run_case([str(img_file)], str(gt_file), pm, cm, d)
        props.pop("class_locations")
        preprocessed.append((name, seg[0], props))
    for m in range(n_models):
        pred = base / f"pred_{m}"
        pred.mkdir()
        _save_json({"list_of_lists_or_source_folder": str(images), "save_probabilities": True},
                   pred / "predict_from_raw_data_args.json", sort_keys=True)
        _save_json(d, pred / "dataset.json")
        _save_json(p, pred / "plans.json")
        model_rng = np.random.default_rng([seed, m])
        for name, seg, props in preprocessed:
            export_prediction_from_logits(_fake_logits(seg, lm, model_rng), deepcopy(props), cm, pm, d,
                                          str(pred / name), save_probabilities=True, num_threads_torch=1)
    return base


def write_postprocessing(path: Path, key: str) -> tuple[list, list]:
    """A ``postprocessing.pkl`` as nnUNetv2_determine_postprocessing writes one (keep the largest foreground
    component, then the largest component of one label or region); returns ``(pp_fns, pp_fn_kwargs)``."""
    from nnunetv2.postprocessing.remove_connected_components import remove_all_but_largest_component_from_segmentation

    lm = PlansManager(plans(key)).get_label_manager(dataset_json(key))
    fn = remove_all_but_largest_component_from_segmentation
    second = lm.foreground_regions[1] if lm.has_regions else lm.foreground_labels[1]
    content = ([fn, fn], [{"labels_or_regions": lm.foreground_labels}, {"labels_or_regions": second}])
    with open(path, "wb") as f:
        pickle.dump(content, f)
    return content

