"""The pieces the MONAI bundles in ``bundles/`` are assembled from; their configs name these, no logic lives there.

- :func:`bundle_root`: where a bundle is, from the repository root or the bundle folder.
- :func:`inference_cases` / :class:`RegistrationInference`: the inference workflow's dataset and evaluator (the
  demo pair built at run time, a user's fixed/moving files in any format, or a folder of cases) through the
  clinical pipeline (:mod:`rli2it_med.clinical`); writes the warped image and labels, the displacement field as an
  ITK/Slicer transform, a QC picture and Dice before/after.
- :func:`registration_pairs` / :class:`RegistrationEvaluator`: the evaluate workflow (held-out pairs, metrics JSON).
- :class:`RegistrationTrainer`: the train workflow (:func:`rli2it_med.registration.train.train`, also under
  ``torchrun``).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from rli2it_med import io, skip_exit_sweep
from rli2it_med.agent import distributed as ddp
from rli2it_med.api import Registrator, StepwiseRegistrationNet
from rli2it_med.registration.data import PairDataset

__all__ = [
    "bundle_root",
    "inference_cases",
    "RegistrationInference",
    "registration_pairs",
    "RegistrationEvaluator",
    "RegistrationTrainer",
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def _flag(value: Any, name: str) -> bool:
    """A yes/no option from a config or the command line (``--resume true`` arrives as the string "true")."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise ValueError(f"{name} must be true or false, got {value!r}")


def bundle_root(name: str) -> str:
    """The folder of bundle ``name``: the working directory when it is that bundle, else ``./bundles/<name>``, else
    the ``bundles/<name>`` next to this package (a source checkout). Override with ``--bundle_root``."""
    cwd = Path.cwd()
    candidates = [cwd, cwd / "bundles" / name, Path(__file__).resolve().parents[1] / "bundles" / name]
    for c in candidates:
        if c.name == name and (c / "configs" / "metadata.json").is_file():
            return str(c)
    raise FileNotFoundError(f"bundle {name!r} not found from {cwd}; run from the repository or pass --bundle_root")


# ---------------------------------------------------------------------------------------------------- inference


def _find(folder: Path, stem: str) -> Path | None:
    for suffix in NIFTI_SUFFIXES:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def inference_cases(
    fixed: str | None = None,
    moving: str | None = None,
    fixed_label: str | None = None,
    moving_label: str | None = None,
    dataset_dir: str | None = None,
    spatial_dims: int = 3,
) -> list[dict[str, Any]]:
    """What the inference workflow registers, in order of precedence:

    1. ``fixed`` and ``moving`` image files of any format :func:`rli2it_med.clinical.read_image` reads (labels
       optional): one case;
    2. ``dataset_dir``: a ``datalist.json`` there (MONAI style, list ``"testing"``, keys ``fixed_image``,
       ``moving_image``, optional ``fixed_label``/``moving_label``), else one case per sub-folder holding
       ``fixed.nii[.gz]`` and ``moving.nii[.gz]`` (and optional ``fixed_label``/``moving_label``);
    3. nothing: the demo pair, built now from the nilearn template
       (:func:`~rli2it_med.registration.synthetic.demo_pair`).

    Files are only read when a case runs, so one unreadable case does not stop the others.
    """
    if (fixed is None) != (moving is None):
        raise ValueError("give both --fixed and --moving (or neither)")
    if fixed is not None:
        return [{"name": Path(fixed).name.split(".")[0], "fixed": fixed, "moving": moving,
                 "fixed_label": fixed_label, "moving_label": moving_label}]  # fmt: skip
    if dataset_dir is None:
        return [{"name": "demo", "demo": spatial_dims}]
    root = Path(dataset_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset_dir not found")
    if (root / "datalist.json").is_file():
        entries = io.load_json(root / "datalist.json").get("testing") or []
        cases = []
        for i, e in enumerate(entries):
            get = lambda k: None if e.get(k) is None else str(root / e[k])  # noqa: B023, E731
            cases.append({"name": e.get("name", f"case{i:03d}"), "fixed": get("fixed_image"),
                          "moving": get("moving_image"), "fixed_label": get("fixed_label"),
                          "moving_label": get("moving_label")})  # fmt: skip
    else:
        cases = [
            {"name": d.name, "fixed": _find(d, "fixed"), "moving": _find(d, "moving"),
             "fixed_label": _find(d, "fixed_label"), "moving_label": _find(d, "moving_label")}
            for d in sorted(p for p in root.iterdir() if p.is_dir())
        ]  # fmt: skip
    if not cases:
        raise ValueError(f"{root}: no cases (expected datalist.json with a 'testing' list, or case sub-folders)")
    return cases


def _load_case(case: dict[str, Any]) -> tuple[Any, Any, Any, Any, dict[str, str]]:
    """A case's fixed, moving, fixed and moving label images (SimpleITK, labels may be None) and label names."""
    from rli2it_med import clinical

    if "demo" in case:
        from rli2it_med.registration.synthetic import demo_pair

        d = demo_pair(case["demo"])
        images = [
            clinical._from_array_and_affine(d[k], d["affine"]) for k in ("fixed", "moving", "fixed_seg", "moving_seg")
        ]
        return *clinical.read_pair(*images), {str(k): v for k, v in d["label_names"].items()}
    for key in ("fixed", "moving"):
        if case.get(key) is None:
            raise FileNotFoundError(f"case {case['name']}: no {key} image")
    return *clinical.read_pair(case["fixed"], case["moving"], case.get("fixed_label"), case.get("moving_label")), {}


class RegistrationInference:
    """Register every case with :func:`rli2it_med.clinical.register_images` (the network run through ``inferer``)
    and write, per case, into ``output_dir/<case>/``:

    ``warped.nii.gz`` (moving image on the fixed image's grid), ``warped_label.nii.gz`` (nearest neighbour, with
    moving labels), ``displacement.nii`` (the transform as an ITK/ANTs/Slicer displacement field, LPS mm, fixed
    -> moving, affine included), ``qc.png`` and ``metrics.json``; and ``summary.json`` for all cases. Dice
    before/after is printed when both label maps are given. A failing case is reported and skipped; :meth:`run`
    raises at the end if any failed.

    Args:
        dataset: cases from :func:`inference_cases`.
        network: the trained :class:`~rli2it_med.api.StepwiseRegistrationNet`.
        inferer: a MONAI inferer, called as ``inferer(inputs, network)`` with ``inputs`` = (1, 2, *S) fixed+moving
            on the model's working grid.
        device: where the network runs.
        output_dir: where results go.
        affine: mutual-information affine pre-alignment before the agent.
        qc: write the QC picture.
    """

    def __init__(
        self,
        dataset: list[dict[str, Any]],
        network: StepwiseRegistrationNet,
        inferer: Any,
        device: torch.device | str,
        output_dir: str,
        affine: bool = True,
        qc: bool = True,
    ) -> None:
        self.dataset, self.network, self.inferer = dataset, network, inferer
        self.device, self.output_dir = torch.device(device), Path(output_dir)
        self.affine, self.qc = _flag(affine, "affine"), _flag(qc, "qc")

    def register(self, case: dict[str, Any]) -> dict[str, Any]:
        from rli2it_med import clinical

        fixed, moving, fseg, mseg, names = _load_case(case)
        out = clinical.register_images(
            fixed, moving, self.network, fseg, mseg, affine=self.affine, device=self.device, inferer=self.inferer
        )
        folder = self.output_dir / case["name"]
        clinical.save_outputs(
            out, fixed, moving, fseg,
            warped_out=folder / "warped.nii.gz",
            warped_seg_out=folder / "warped_label.nii.gz" if mseg is not None else None,
            transform_out=folder / "displacement.nii",  # float vectors barely compress: gzip cost 0.5 s for 9 %
            qc_out=folder / "qc.png" if self.qc else None,
        )  # fmt: skip
        result = {"case": case["name"]} | out.stats
        for key in ("dice_before", "dice_affine", "dice"):
            if key in result:
                result[key] = {names.get(k, k): v for k, v in result[key].items()}
        io.save_json(folder / "metrics.json", result)
        return result

    def run(self) -> list[dict[str, Any]]:
        skip_exit_sweep()
        self.network.to(self.device).eval()
        results, failures = [], []
        for case in self.dataset:
            try:
                r = self.register(case)
            except Exception as e:  # noqa: BLE001 - one bad case is reported, the batch goes on
                failures.append({"case": case["name"], "error": f"{type(e).__name__}: {e}"})
                print(f"{case['name']}: FAILED: {type(e).__name__}: {e}")
                continue
            results.append(r)
            line = f"{r['case']}: {r['seconds']:.2f} s, folding {r['folding_percent']:.3f} %"
            if "dice" in r:
                per = ", ".join(f"{k} {r['dice_before'][k]:.3f}->{v:.3f}" for k, v in r["dice"].items())
                line += f", Dice before {r['dice_before_mean']:.3f} -> after {r['dice_mean']:.3f} ({per})"
            print(f"{line}; outputs in {self.output_dir / r['case']}")
        io.save_json(self.output_dir / "summary.json", {"cases": results, "failed": failures})
        if failures:
            raise RuntimeError(f"{len(failures)} of {len(self.dataset)} cases failed: {failures}")
        return results


# --------------------------------------------------------------------------------------------- evaluate / train


def registration_pairs(dataset_dir: str, split: str = "test", kind: str = "template") -> PairDataset:
    """Pairs of a ``data_prep/brain.py`` dataset split, or of a ``datalist.json`` in ``dataset_dir`` (its
    ``"training"`` list for ``train``, ``"validation"`` for ``val``, ``"testing"`` for ``test``)."""
    root = Path(dataset_dir)
    if (root / "datalist.json").is_file():
        return PairDataset.from_datalist(
            root / "datalist.json", {"val": "validation", "test": "testing"}.get(split, "training")
        )
    if not (root / "meta.json").is_file():
        raise FileNotFoundError(
            f"{root}: no dataset; build one with `python data_prep/brain.py --dim 3 --out {root}`"
            " or put a datalist.json there"
        )
    return PairDataset.load(root, split, kind)


class RegistrationEvaluator:
    """Score the network on held-out pairs: Dice per label, HD95, folding, seconds per pair, Dice after each step.

    The episode is rolled out through ``network.rollout`` rather than the one-call ``inferer`` so the Dice after
    every step t = 0..T is measured too. Prints a table and writes ``output_dir/metrics.json``.
    """

    def __init__(
        self,
        dataset: PairDataset,
        network: StepwiseRegistrationNet,
        inferer: Any,
        device: torch.device | str,
        output_dir: str,
        label_names: dict[str, str] | None = None,
        limit: int | None = None,
    ) -> None:
        self.dataset, self.network, self.inferer = dataset, network, inferer
        self.device, self.output_dir = torch.device(device), Path(output_dir)
        self.label_names, self.limit = label_names or {}, limit

    def run(self) -> dict[str, Any]:
        from rli2it_med.registration.train import evaluate, gm_wm_dice, summarize

        skip_exit_sweep()
        reg = Registrator.from_net(self.network, self.device)
        metrics = evaluate(reg, self.dataset, limit=self.limit, progress=True)
        summary: dict[str, Any] = summarize(metrics, self.label_names)
        summary["dice_gm_wm"] = gm_wm_dice(metrics)
        summary["pairs"] = len(metrics["dice"])
        summary["dice_per_step"] = [float(x) for x in metrics["dice_steps"].mean(0)]
        for k, v in summary.items():
            print(f"  {k:<18} {v:.4f}" if isinstance(v, float) else f"  {k:<18} {v}")
        io.save_json(self.output_dir / "metrics.json", summary)
        return summary


class RegistrationTrainer:
    """The train workflow: SAC + auxiliary loss on the network's agent (:func:`~rli2it_med.registration.train.train`).

    One *epoch* is ``epoch_length`` gradient updates followed by validation and checkpoints (``model.pt`` latest,
    ``best.pt`` by validation GM/WM Dice, ``train_state.pt`` for resuming, ``progress.csv``) in ``output_dir``.
    Training stops after ``max_epochs`` epochs or ``minutes`` of wall clock, whichever comes first; the learning
    rates follow a cosine over ``minutes``. With ``minutes`` None (``null`` in a config or override) the budget is
    the epochs alone, the schedule follows the updates and a killed run resumes exactly (see
    :mod:`rli2it_med.agent.loop`). Under ``torchrun`` it trains data-parallel (see :mod:`rli2it_med.agent.distributed`).

    Args:
        network: its agent config, episode length, step bound, grid scale, coarse and fine steps define what is
            trained.
        dataset, val_dataset: training and validation pairs.
        options: any other :class:`~rli2it_med.registration.train.TrainConfig` field (``batch_size``,
            ``env_batch``, ``sac``/``loss`` as dicts...), over the 2D/3D defaults.
    """

    def __init__(
        self,
        network: StepwiseRegistrationNet,
        dataset: PairDataset,
        val_dataset: PairDataset,
        output_dir: str,
        max_epochs: int,
        epoch_length: int = 200,
        minutes: float | None = 50.0,
        device: torch.device | str = "auto",
        resume: bool = False,
        seed: int = 0,
        dataset_dir: str = "",
        progress: bool = True,
        **options: Any,
    ) -> None:
        from rli2it_med.agent import SACConfig
        from rli2it_med.registration.task import LossConfig
        from rli2it_med.registration.train import default_config

        cfg = default_config(network.spatial_dims)
        for name, cls in (("sac", SACConfig), ("loss", LossConfig)):
            if name in options:
                options[name] = cls(**(asdict(getattr(cfg, name)) | dict(options[name])))
        for k in set(options) & {"agent", "env", "coarse_steps", "fine_steps"}:
            raise ValueError(f"training option {k!r}: the network defines agent and episode")
        cfg.updated(**options)
        cfg.agent = network.agent.config
        cfg.env.max_steps, cfg.env.max_step, cfg.grid_scale = network.steps, network.max_step, network.grid_scale
        cfg.coarse_steps, cfg.fine_steps = network.coarse_steps, network.fine_steps
        cfg.data, cfg.out, cfg.seed = str(dataset_dir), str(output_dir), int(seed)
        cfg.minutes = None if minutes in (None, "null", "None") else float(minutes)
        cfg.eval_every, cfg.max_updates = int(epoch_length), int(max_epochs * epoch_length)
        cfg.device = str(device)
        self.config, self.max_epochs = cfg, int(max_epochs)
        self.dataset, self.val_dataset = dataset, val_dataset
        self.resume, self.progress = _flag(resume, "resume"), _flag(progress, "progress")

    def run(self) -> dict[str, Any]:
        from rli2it_med.registration.train import train

        skip_exit_sweep()
        result = train(self.config, self.resume, self.progress, self.dataset, self.val_dataset)
        if ddp.rank() == 0:
            print({k: v for k, v in result.items() if k != "val"} | {"val_dice_gm_wm": result["val"].get("dice_gm_wm")})
        return result
