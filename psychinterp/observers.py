"""Machine observers: simulated participants that answer a trial from its images alone.

The similarity observer compares each query with the max and the min references in a feature
space: evidence = mean similarity to the max references - mean similarity to the min
references. It picks query A with probability

    lapse / 2 + (1 - lapse) * sigmoid(temperature * (evidence_A - evidence_B))

and its confidence grows with |evidence_A - evidence_B|. In an odd-one-out trial (no references)
it picks the image least similar to the others: evidence = minus its mean similarity to the
other images, with the same softmax and lapse. Feature spaces are pluggable:
pixel and colour statistics (no model, no torch), the embedding of any registry model, or any
embedding function the user names (a perceptual-similarity model such as DreamSim).

Observers act as participants through the server's HTTP API (:func:`psychinterp.scripted.run_session`),
or offline on a bundle, where :func:`machine_scores` gives each unit's expected accuracy.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from contracts.errors import PsychinterpError

ImageSource = Callable[[str], np.ndarray]  # image URL or hash -> uint8 HWC


class FeatureSpace(Protocol):
    name: str

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(n, d) features of uint8 HWC images; rows are compared by cosine similarity."""


@dataclass
class PixelStatistics:
    """Colour moments, a coarse colour histogram and an orientation-energy histogram."""

    name: str = "pixel"
    colour_bins: int = 4
    orientation_bins: int = 8
    max_side: int = 112  # larger images are subsampled to about this: the statistics need no more

    def _one(self, pixels: np.ndarray) -> np.ndarray:
        stride = max(1, -(-max(pixels.shape[:2]) // self.max_side))
        rgb = pixels[::stride, ::stride, :3].astype(np.float32) / 255
        moments = np.concatenate([rgb.mean(axis=(0, 1)), rgb.std(axis=(0, 1))])
        quantised = np.minimum((rgb * self.colour_bins).astype(int), self.colour_bins - 1)
        codes = (quantised[..., 0] * self.colour_bins + quantised[..., 1]) * self.colour_bins + quantised[..., 2]
        colours = np.bincount(codes.ravel(), minlength=self.colour_bins**3) / codes.size
        grey = rgb.mean(axis=2)
        gy, gx = np.gradient(grey)
        angle = (np.arctan2(gy, gx) % np.pi) / np.pi * self.orientation_bins
        energy = np.hypot(gx, gy)
        orientation = np.bincount(
            np.minimum(angle.astype(int), self.orientation_bins - 1).ravel(),
            weights=energy.ravel(),
            minlength=self.orientation_bins,
        )
        orientation = orientation / (orientation.sum() or 1.0)
        return np.concatenate([moments, colours, orientation, [energy.mean()]])

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([self._one(image) for image in images])


def _registry_model(model_id: str, weights_file: Path | None, models_file: Path | None):
    """A registry model for an observer's features, and its eligible layers' channel counts (in depth order)."""
    from stimuli.registry import eligible_layers, load_model
    from stimuli.specs import load_model_specs

    specs = load_model_specs(models_file)
    if model_id not in specs:
        raise PsychinterpError(f"observer features: unknown model {model_id!r}; known: {sorted(specs)}")
    model = load_model(specs[model_id], weights_file)
    return model, {layer.name: layer.channels for layer in eligible_layers(model)}


def _model_batch(model, images: Sequence[np.ndarray]):
    """uint8 HWC images as the model's [0, 1] input batch at its input size."""
    import torch

    size = model.input_size
    # np.array copies: arrays from PIL are read-only, which torch warns about.
    batch = torch.stack([torch.from_numpy(np.array(i[..., :3])).permute(2, 0, 1) for i in images])
    return torch.nn.functional.interpolate(batch.float() / 255, size=(size, size), mode="bilinear", antialias=True)


@dataclass
class ModelEmbedding:
    """Spatially pooled activations of one layer of a registry model (needs torch)."""

    model_id: str
    layer: str | None = None  # default: the last eligible layer
    weights_file: Path | None = None
    models_file: Path | None = None
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self._model, self._channels = _registry_model(self.model_id, self.weights_file, self.models_file)
        self.layer = self.layer or list(self._channels)[-1]
        if self.layer not in self._channels:
            raise PsychinterpError(f"observer features: {self.model_id!r} has no eligible layer {self.layer!r}")
        self.name = f"{self.model_id}:{self.layer}"

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        from contracts.units import channel
        from stimuli.registry import unit_activations

        every_channel = [channel(c) for c in range(self._channels[self.layer])]
        batch = _model_batch(self._model, images)
        return unit_activations(self._model, batch, {self.layer: every_channel})[self.layer].cpu().numpy()


@dataclass
class PerceptualFeatures:
    """LPIPS-style features (Zhang et al. 2018): a registry backbone's maps at several layers, each position's
    channel vector scaled to unit length, times per-channel weights, compared by the squared distance
    averaged over positions and summed over layers. Weights: uniform (1), or from a file: JSON/YAML
    ``{layer: [one per channel]}``, or an ``lpips`` package weights file (``lin{i}.model.1.weight``, one per
    layer in order), which with the backbone's published weights gives the published metric."""

    model_id: str
    layers: list[str] | None = None  # default: five eligible layers spread over the depth
    layer_weights: Path | None = None
    weights_file: Path | None = None  # the backbone's
    models_file: Path | None = None
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self._model, eligible = _registry_model(self.model_id, self.weights_file, self.models_file)
        names = list(eligible)
        if not self.layers:
            picks = np.unique(np.linspace(0, len(names) - 1, min(5, len(names))).round().astype(int))
            self.layers = [names[i] for i in picks]
        unknown = [layer for layer in self.layers if layer not in eligible]
        if unknown:
            raise PsychinterpError(f"observer lpips:{self.model_id}: no eligible layer(s) {unknown}; eligible: {names}")
        self._weights = self._load_weights({layer: eligible[layer] for layer in self.layers})
        self.name = f"lpips:{self.model_id}:{','.join(self.layers)}" + (
            f"@{self.layer_weights.name}" if self.layer_weights else ""
        )

    def _load_weights(self, channels: dict[str, int]) -> dict[str, np.ndarray]:
        if self.layer_weights is None:
            return {layer: np.ones(c) for layer, c in channels.items()}
        import yaml

        path = Path(self.layer_weights)
        try:
            if path.suffix in {".pth", ".pt"}:
                import torch

                state = torch.load(path, map_location="cpu", weights_only=True)
                rows = [state[f"lin{i}.model.1.weight"].reshape(-1).numpy() for i in range(len(channels))]
                table = dict(zip(channels, rows, strict=True))
            else:
                import yaml

                table = {k: np.asarray(v, float) for k, v in yaml.safe_load(path.read_text()).items()}
        except (OSError, KeyError, ValueError, AttributeError, RuntimeError, yaml.YAMLError) as exc:
            raise PsychinterpError(
                f"observer lpips: layer weights {path}: cannot read them ({type(exc).__name__}: {exc}); give JSON or "
                "YAML {layer: [one weight per channel]}, or an lpips weights file (lin0.model.1.weight, ...)"
            ) from None
        weights = {}
        for layer, c in channels.items():
            row = np.asarray(table.get(layer, []), float).reshape(-1)
            if row.shape != (c,) or not np.isfinite(row).all() or (row < 0).any():
                raise PsychinterpError(
                    f"observer lpips: layer weights {path}: layer {layer!r} needs {c} finite weights >= 0, got "
                    f"{row.size if layer in table else 'none'}"
                )
            weights[layer] = row
        return weights

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        from stimuli.registry import capture_outputs, channel_map, forward_until_captured

        batch = _model_batch(self._model, images)
        parts = []
        with capture_outputs(self._model.module, self.layers, stop_early=True) as captured, torch.no_grad():
            forward_until_captured(self._model.module, self._model.normalize(batch.to(self._model.device)), captured)
            for layer in self.layers:
                maps = channel_map(captured[layer], self._model.spec.prefix_tokens).float().cpu()
                maps = maps.reshape(len(images), maps.shape[1], -1)  # (n, C, positions)
                unit = maps / (maps.norm(dim=1, keepdim=True) + 1e-10)
                scale = torch.from_numpy(np.sqrt(self._weights[layer])).float()[None, :, None]
                parts.append((unit * scale).reshape(len(images), -1).numpy() / np.sqrt(maps.shape[2]))
        return np.concatenate(parts, axis=1)

    @staticmethod
    def similarity(a: np.ndarray, b: np.ndarray, *_: np.ndarray) -> np.ndarray:
        """Minus the LPIPS distance: squared differences, averaged over positions, summed over layers."""
        squared = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2 * a @ b.T
        return -np.maximum(squared, 0)


@dataclass
class CallableFeatures:
    """Features from a user's function: ``embed(images) -> (n, d)`` (a perceptual model such as DreamSim)."""

    name: str
    function: Callable[[Sequence[np.ndarray]], np.ndarray]

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        features = np.asarray(self.function(images), dtype=float)
        if features.ndim != 2 or len(features) != len(images):
            raise PsychinterpError(
                f"observer features {self.name}: expected an array of shape ({len(images)}, d), got {features.shape}"
            )
        return features


def _import_features(target: str) -> CallableFeatures:
    import importlib

    module_name, _, attribute = target.rpartition(":")
    if not module_name or not attribute:
        raise PsychinterpError(f"observer 'python:{target}': use python:MODULE:FUNCTION")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise PsychinterpError(f"observer 'python:{target}': cannot import it ({exc})") from None
    if not callable(function):
        raise PsychinterpError(f"observer 'python:{target}': {attribute!r} is not callable")
    return CallableFeatures(name=target, function=function)


def choice_probabilities(evidence: np.ndarray, temperature: float, lapse: float) -> np.ndarray:
    """``lapse / n + (1 - lapse) * softmax(temperature * evidence)`` over the last axis."""
    n = evidence.shape[-1]
    weights = np.exp(temperature * (evidence - evidence.max(axis=-1, keepdims=True)))
    return lapse / n + (1 - lapse) * weights / weights.sum(axis=-1, keepdims=True)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-12)
    b = b / (np.linalg.norm(b, axis=1, keepdims=True) + 1e-12)
    return a @ b.T


@dataclass
class SimilarityObserver:
    features: FeatureSpace
    temperature: float = 10.0
    lapse: float = 0.05
    rng: np.random.Generator = field(default_factory=np.random.default_rng)
    _features: dict[bytes, np.ndarray] = field(default_factory=dict, init=False, repr=False)

    def choice_probabilities(
        self, queries: Sequence[np.ndarray], max_refs: Sequence[np.ndarray], min_refs: Sequence[np.ndarray]
    ) -> tuple[np.ndarray, float]:
        """Probability of choosing each query, and the evidence margin of the best query over the next.

        A query's evidence is its mean similarity to the max references minus that to the min
        references; the choice is a softmax of the evidence (for two queries, a logistic on their
        difference) mixed with uniform guessing at the lapse rate.
        """
        if not max_refs:  # no references: nothing to go on
            return np.full(len(queries), 1 / len(queries)), 0.0
        return self._softmax(self.reference_evidence(queries, max_refs, min_refs))

    def _similarity(self, a: np.ndarray, b: np.ndarray, within: np.ndarray) -> np.ndarray:
        """Similarity of each row of ``a`` to each of ``b``: the feature space's own metric, else cosine on
        features standardised within the trial (what distinguishes these images)."""
        metric = getattr(self.features, "similarity", None)
        if metric is not None:  # a perceptual metric is already what it should be: no standardising
            return metric(a, b)
        mean, sd = within.mean(axis=0), within.std(axis=0) + 1e-9
        return _cosine((a - mean) / sd, (b - mean) / sd)

    def reference_evidence(
        self, queries: Sequence[np.ndarray], max_refs: Sequence[np.ndarray], min_refs: Sequence[np.ndarray]
    ) -> np.ndarray:
        """Each query's mean similarity to the max references minus that to the min references."""
        n = len(queries)
        features = self._embed([*queries, *max_refs, *min_refs])
        q, hi, lo = features[:n], features[n : n + len(max_refs)], features[n + len(max_refs) :]
        return self._similarity(q, hi, features).mean(axis=1) - self._similarity(q, lo, features).mean(axis=1)

    def odd_one_out_evidence(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Each image's oddness: minus its mean similarity to the others."""
        features = self._embed(list(images))
        similarity = self._similarity(features, features, features)
        np.fill_diagonal(similarity, np.nan)
        return -np.nanmean(similarity, axis=1)

    def trial_evidence(
        self, queries: Sequence[np.ndarray], max_refs: Sequence[np.ndarray], min_refs: Sequence[np.ndarray]
    ) -> np.ndarray:
        """The evidence for each query that the choice is a softmax of: by the references when the trial
        has them, else as odd-one-out (zeros when a two-query trial has no references)."""
        if not max_refs:
            return self.odd_one_out_evidence(queries) if len(queries) > 2 else np.zeros(len(queries))
        return self.reference_evidence(queries, max_refs, min_refs)

    def _embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Features of each image, remembered by its pixels: the observers of one task see the same images
        under other URLs, and a feature space's cost is per image."""
        keys = [hashlib.blake2b(np.ascontiguousarray(i).tobytes(), digest_size=16).digest() for i in images]
        missing = [k for k in dict.fromkeys(keys) if k not in self._features]
        if missing:
            wanted = set(missing)
            first = {k: image for k, image in zip(keys, images, strict=True) if k in wanted}
            for key, row in zip(first, self.features.embed(list(first.values())), strict=True):
                self._features[key] = row
        return np.stack([self._features[k] for k in keys])

    def _softmax(self, evidence: np.ndarray) -> tuple[np.ndarray, float]:
        p = choice_probabilities(evidence, self.temperature, self.lapse)
        best, runner_up = np.sort(evidence)[::-1][:2]
        return p, float(best - runner_up)

    def odd_one_out_probabilities(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, float]:
        """Probability of calling each image the odd one: the least similar to the others is likeliest."""
        return self._softmax(self.odd_one_out_evidence(images))

    def trial_probabilities(
        self, queries: Sequence[np.ndarray], max_refs: Sequence[np.ndarray], min_refs: Sequence[np.ndarray]
    ) -> tuple[np.ndarray, float]:
        """The trial's choice probabilities: by the references when it has them, else as odd-one-out."""
        return self._softmax(self.trial_evidence(queries, max_refs, min_refs))

    def decide(self, trial: dict, image: ImageSource) -> tuple[int, int]:
        refs = trial["references"]
        queries = [image(u) for u in trial["queries"]]
        if trial.get("layout") == "grid":
            p, margin = self.odd_one_out_probabilities(queries)
        else:
            p, margin = self.choice_probabilities(
                queries, [image(u) for u in refs["max"]], [image(u) for u in refs["min"]]
            )
        choice = min(int(np.searchsorted(np.cumsum(p), self.rng.random(), side="right")), len(p) - 1)
        strength = self.temperature * margin
        return choice, 3 if strength > 2 else 2 if strength > 0.7 else 1


def http_images(client) -> ImageSource:
    """Images fetched through the server, as a browser gets them (cached per observer)."""
    cache: dict[str, np.ndarray] = {}

    def fetch(url: str) -> np.ndarray:
        if url not in cache:
            response = client.get(url)
            data = response.data if hasattr(response, "data") else response.content
            cache[url] = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        return cache[url]

    return fetch


def bundle_images(bundle_dir: Path) -> ImageSource:
    def read(sha: str) -> np.ndarray:
        return np.asarray(Image.open(Path(bundle_dir) / "images" / f"{sha}.png").convert("RGB"))

    return read


def machine_scores(bundle, bundle_dir: Path, observer: SimilarityObserver) -> pd.DataFrame:
    """Offline: each unit's expected accuracy under the observer, over its main trials in the bundle (the
    machine-only units' trials too), with the observer's name, temperature and lapse and the study's id."""
    image = bundle_images(bundle_dir)
    answers = bundle.answer_key.answers
    rows = []
    for trial in [*bundle.manifest.all_trials(), *bundle.manifest.machine_trials]:
        if trial.kind != "main" or trial.condition == "none":
            continue
        p, _ = observer.trial_probabilities(
            [image(q) for q in trial.queries],
            [image(r) for r in trial.references.max],
            [image(r) for r in trial.references.min],
        )
        p_correct = float(p[answers[trial.trial_id].max_query])
        rows.append({"unit_id": trial.unit_id, "condition": trial.condition, "p_correct": p_correct})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=["unit_id", "condition", "machine_score", "n_trials"])
    units = {u.unit_id: u.model_id for u in bundle.manifest.all_units()}
    shown = {u.unit_id for u in bundle.manifest.units}
    scores = frame.groupby(["unit_id", "condition"])["p_correct"].agg(machine_score="mean", n_trials="count")
    scores = scores.reset_index()
    scores.insert(0, "model_id", scores["unit_id"].map(units))
    scores["shown_to_people"] = scores["unit_id"].isin(shown).map({True: "yes", False: "no"})
    return scores.assign(
        observer=observer.features.name,
        temperature=observer.temperature,
        lapse=observer.lapse,
        study_id=bundle.manifest.study_id,
    )


OBSERVER_SPECS = "pixel, model:ID[:LAYER], lpips:ID[:LAYER,LAYER,...] or python:MODULE:FUNCTION"


def make_observer(
    spec: str,
    seed: int = 0,
    temperature: float = 10.0,
    lapse: float = 0.05,
    models_file: Path | None = None,
    layer_weights: Path | None = None,
    calibration: Calibration | None = None,
) -> SimilarityObserver:
    """``pixel``; ``model:ID[:LAYER]``, a registry model's embedding; ``lpips:ID[:LAYERS]``, a perceptual
    distance on a registry backbone (``layer_weights``: its per-channel weights, else uniform); or
    ``python:MODULE:FUNCTION``, any embedding function (images -> (n, d) features), e.g. DreamSim.
    A ``calibration`` (fitted to people by :func:`calibrate`) sets the temperature and lapse."""
    if layer_weights is not None and not spec.startswith("lpips:"):
        raise PsychinterpError(f"observer {spec!r}: layer weights are for lpips:ID observers only")
    if spec == "pixel":
        features: FeatureSpace = PixelStatistics()
    elif spec.startswith("model:"):
        _, model_id, *layer = spec.split(":", 2)
        features = ModelEmbedding(model_id, layer[0] if layer else None, models_file=models_file)
    elif spec.startswith("lpips:"):
        _, model_id, *layers = spec.split(":", 2)
        chosen = [name for name in layers[0].split(",") if name] if layers else None
        features = PerceptualFeatures(model_id, chosen, layer_weights, models_file=models_file)
    elif spec.startswith("python:"):
        features = _import_features(spec.removeprefix("python:"))
    else:
        raise PsychinterpError(f"observer {spec!r}: use {OBSERVER_SPECS}")
    if calibration is not None:
        if calibration.observer != features.name:
            raise PsychinterpError(
                f"calibration {calibration.source}: fitted for observer {calibration.observer!r}, not "
                f"{features.name!r}: calibrate this observer (psychinterp observers calibrate)"
            )
        temperature, lapse = calibration.temperature, calibration.lapse
    return SimilarityObserver(features, temperature=temperature, lapse=lapse, rng=np.random.default_rng(seed))


# --- calibration against people ------------------------------------------------------------------


class Calibration(BaseModel):
    """An observer's temperature and lapse, fitted by maximum likelihood to people's answers in one study."""

    model_config = ConfigDict(extra="forbid")

    observer: str = Field(description="the feature space's name (the scores' observer column)")
    temperature: float = Field(gt=0)
    lapse: float = Field(ge=0, lt=1)
    study_id: str = Field(description="the study whose responses it was fitted to")
    responses: int = Field(gt=0, description="main-trial responses it was fitted to")
    log_likelihood: float
    source: str = Field("", exclude=True, description="the file it was read from (not saved)")

    def save(self, path: Path) -> None:
        from contracts.bundle import write_json_atomic

        write_json_atomic(path, self.model_dump(mode="json"))

    @classmethod
    def load(cls, path: Path) -> Calibration:
        import json

        try:
            return cls.model_validate({**json.loads(Path(path).read_text()), "source": str(path)})
        except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            raise PsychinterpError(
                f"calibration {path}: not a calibration file ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                "write one with psychinterp observers calibrate"
            ) from None


def fit_calibration(evidence: np.ndarray, correct_option: np.ndarray, chose_correct: np.ndarray) -> tuple:
    """Maximum-likelihood (temperature, lapse, log-likelihood) for answers to trials with the same number of
    options: ``evidence`` (responses x options), the correct option's index, and whether each person chose it."""
    from scipy.optimize import minimize

    rows = np.arange(len(evidence))
    chose = chose_correct.astype(bool)

    def negative_log_likelihood(theta: np.ndarray) -> float:
        temperature, lapse = np.exp(np.clip(theta[0], -30, 30)), 1 / (1 + np.exp(-np.clip(theta[1], -30, 30)))
        p = choice_probabilities(evidence, temperature, lapse)[rows, correct_option]
        p = np.clip(p, 1e-12, 1 - 1e-12)
        return -float(np.log(p[chose]).sum() + np.log1p(-p[~chose]).sum())

    spread = float(np.std(evidence)) or 1.0
    starts = [np.array([np.log(t / spread), -3.0]) for t in (0.3, 1.0, 3.0)]
    best = min((minimize(negative_log_likelihood, x0, method="Nelder-Mead") for x0 in starts), key=lambda r: r.fun)
    temperature, lapse = np.exp(np.clip(best.x[0], -30, 30)), 1 / (1 + np.exp(-np.clip(best.x[1], -30, 30)))
    return float(temperature), float(lapse), -float(best.fun)


def calibrate(bundle, bundle_dir: Path, responses: pd.DataFrame, observer: SimilarityObserver) -> Calibration:
    """Fit the observer's temperature and lapse to people's main-trial answers in this bundle's study."""
    image = bundle_images(bundle_dir)
    trials = bundle.manifest.trials()
    answers = bundle.answer_key.answers
    main = responses[responses["trial_kind"] == "main"] if "trial_kind" in responses else responses
    if "trial_id" not in main:
        raise PsychinterpError("calibrate: the response table has no trial_id column (export it from the server)")
    unknown = sorted(set(main["trial_id"].astype(str)) - set(trials))
    if unknown:
        raise PsychinterpError(
            f"calibrate: {len(unknown)} trial id(s) of the responses are not in the bundle, e.g. {unknown[:3]}: "
            "give the bundle of the study the responses are from"
        )
    main = main[[trials[t].condition != "none" for t in main["trial_id"]]]
    if main.empty:
        raise PsychinterpError("calibrate: no main-trial responses with images to compare (condition none only)")
    evidence = {}
    for trial_id in dict.fromkeys(main["trial_id"]):
        trial = trials[trial_id]
        evidence[trial_id] = observer.trial_evidence(
            [image(q) for q in trial.queries],
            [image(r) for r in trial.references.max],
            [image(r) for r in trial.references.min],
        )
    matrix = np.stack([evidence[t] for t in main["trial_id"]])
    correct_option = np.array([answers[t].max_query for t in main["trial_id"]])
    temperature, lapse, log_likelihood = fit_calibration(matrix, correct_option, main["correct"].to_numpy())
    return Calibration(
        observer=observer.features.name,
        temperature=temperature,
        lapse=lapse,
        study_id=bundle.manifest.study_id,
        responses=len(main),
        log_likelihood=log_likelihood,
    )
