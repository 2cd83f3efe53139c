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


@dataclass
class ModelEmbedding:
    """Spatially pooled activations of one layer of a registry model (needs torch)."""

    model_id: str
    layer: str | None = None  # default: the last eligible layer
    weights_file: Path | None = None
    models_file: Path | None = None
    name: str = field(init=False)

    def __post_init__(self) -> None:
        from stimuli.registry import eligible_layers, load_model
        from stimuli.specs import load_model_specs

        specs = load_model_specs(self.models_file)
        if self.model_id not in specs:
            raise PsychinterpError(f"observer features: unknown model {self.model_id!r}; known: {sorted(specs)}")
        self._model = load_model(specs[self.model_id], self.weights_file)
        layers = eligible_layers(self._model)
        self.layer = self.layer or layers[-1].name
        self._channels = {layer.name: layer.channels for layer in layers}
        if self.layer not in self._channels:
            raise PsychinterpError(f"observer features: {self.model_id!r} has no eligible layer {self.layer!r}")
        self.name = f"{self.model_id}:{self.layer}"

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        import torch

        from contracts.units import channel
        from stimuli.registry import unit_activations

        size = self._model.input_size
        # np.array copies: arrays from PIL are read-only, which torch warns about.
        batch = torch.stack([torch.from_numpy(np.array(i[..., :3])).permute(2, 0, 1) for i in images])
        batch = torch.nn.functional.interpolate(batch.float() / 255, size=(size, size), mode="bilinear", antialias=True)
        every_channel = [channel(c) for c in range(self._channels[self.layer])]
        return unit_activations(self._model, batch, {self.layer: every_channel})[self.layer].cpu().numpy()


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
        n = len(queries)
        if not max_refs:  # no references: nothing to go on
            return np.full(n, 1 / n), 0.0
        features = self._embed([*queries, *max_refs, *min_refs])
        # Standardised within the trial, so that similarity reflects what distinguishes these images.
        features = (features - features.mean(axis=0)) / (features.std(axis=0) + 1e-9)
        q, hi, lo = features[:n], features[n : n + len(max_refs)], features[n + len(max_refs) :]
        return self._softmax(_cosine(q, hi).mean(axis=1) - _cosine(q, lo).mean(axis=1))

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
        n = len(evidence)
        weights = np.exp(self.temperature * (evidence - evidence.max()))
        p = self.lapse / n + (1 - self.lapse) * weights / weights.sum()
        best, runner_up = np.sort(evidence)[::-1][:2]
        return p, float(best - runner_up)

    def odd_one_out_probabilities(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, float]:
        """Probability of calling each image the odd one: the least similar to the others is likeliest."""
        features = self._embed(list(images))
        features = (features - features.mean(axis=0)) / (features.std(axis=0) + 1e-9)
        similarity = _cosine(features, features)
        np.fill_diagonal(similarity, np.nan)
        return self._softmax(-np.nanmean(similarity, axis=1))

    def trial_probabilities(
        self, queries: Sequence[np.ndarray], max_refs: Sequence[np.ndarray], min_refs: Sequence[np.ndarray]
    ) -> tuple[np.ndarray, float]:
        """The trial's choice probabilities: by the references when it has them, else as odd-one-out."""
        if not max_refs and len(queries) > 2:
            return self.odd_one_out_probabilities(queries)
        return self.choice_probabilities(queries, max_refs, min_refs)

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
    """Offline: each unit's expected accuracy under the observer, over its main trials in the bundle."""
    image = bundle_images(bundle_dir)
    answers = bundle.answer_key.answers
    rows = []
    for trial in bundle.manifest.all_trials():
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
    units = {u.unit_id: u.model_id for u in bundle.manifest.units}
    scores = frame.groupby(["unit_id", "condition"])["p_correct"].agg(machine_score="mean", n_trials="count")
    scores = scores.reset_index()
    scores.insert(0, "model_id", scores["unit_id"].map(units))
    scores["observer"] = observer.features.name
    return scores


def make_observer(
    spec: str, seed: int = 0, temperature: float = 10.0, lapse: float = 0.05, models_file: Path | None = None
) -> SimilarityObserver:
    """``pixel``; ``model:ID[:LAYER]``, a registry model's embedding; or ``python:MODULE:FUNCTION``,
    any embedding function (images -> (n, d) features), e.g. a perceptual model such as DreamSim."""
    if spec == "pixel":
        features: FeatureSpace = PixelStatistics()
    elif spec.startswith("model:"):
        _, model_id, *layer = spec.split(":", 2)
        features = ModelEmbedding(model_id, layer[0] if layer else None, models_file=models_file)
    elif spec.startswith("python:"):
        features = _import_features(spec.removeprefix("python:"))
    else:
        raise PsychinterpError(f"observer {spec!r}: use 'pixel', 'model:ID[:LAYER]' or 'python:MODULE:FUNCTION'")
    return SimilarityObserver(features, temperature=temperature, lapse=lapse, rng=np.random.default_rng(seed))
