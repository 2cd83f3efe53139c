"""Dictionaries of directions in a layer's channel space: read from a file, or fitted on sampled activations.

A dictionary is a value with a weight matrix (size x channels) and, for encoder latents, a bias:

- ``direction`` rows are linear: a unit's activation is the spatial mean of ``v · x``;
- ``latent`` rows are a sparse autoencoder's encoder: the spatial mean of ``ReLU(w · x + b)``.

Computed dictionaries are fitted on one bounded random sample of positions per model
(:func:`sample_positions`): ``dictionary_sample.images`` images, ``positions_per_image`` positions
each, so memory depends on that sample, never on the dataset. The methods form an open table,
:data:`FIT_METHODS` (scikit-learn's KMeans, NMF and PCA, and the project's own small SAE).
A dictionary is written into the bundle (``dictionaries/``) with what it came from and how
well it fits, and units are drawn only from rows whose activation varies on the sample.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from contracts.bundle import DICTIONARIES, Dictionary
from contracts.errors import ConfigError, PsychinterpError
from contracts.units import ChannelSelector, DirectionSelector, LatentSelector, UnitRef
from stimuli.exemplars import ImageTreeDataset, loader_for, model_inputs
from stimuli.registry import LoadedModel, capture_outputs, channel_map, forward_until_captured
from stimuli.selectors import BoundUnit, LatentReadout, LinearReadout
from stimuli.study import DictionaryConfig, DictionarySampleConfig, SAEConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fitted:
    """A dictionary's vectors and how well it describes the sample."""

    form: str  # "direction" or "latent"
    weights: np.ndarray  # (size, channels) float32
    bias: np.ndarray | None = None  # (size,) float32, latents only
    fit: dict[str, float] = field(default_factory=dict)

    def responses(self, positions: np.ndarray) -> np.ndarray:
        """(n, size): every row's value at each sampled position."""
        values = positions @ self.weights.T
        return np.maximum(values + self.bias, 0) if self.form == "latent" else values

    def live_rows(self, positions: np.ndarray) -> list[int]:
        """Rows whose value varies on the sample: a dead latent or a direction orthogonal to the data has no ranking."""
        values = self.responses(positions)
        spread = values.std(axis=0)
        scale = np.abs(values).max(axis=0)
        return [int(i) for i in np.flatnonzero(spread > 1e-6 * np.maximum(scale, 1e-12))]


# --- the sample ---------------------------------------------------------------


def sample_positions(
    model: LoadedModel,
    layers: Sequence[str],
    dataset: ImageTreeDataset,
    sample: DictionarySampleConfig,
    seed: int,
    batch_size: int = 32,
    num_workers: int = 0,
) -> dict[str, np.ndarray]:
    """Per layer, (images x positions_per_image, channels): a seeded random sample of positions.

    Images are drawn without replacement, then positions within each image; the draws depend on
    the seed and the image order only, not on the batch size.
    """
    n_images = min(sample.images, len(dataset))
    rows = np.sort(np.random.default_rng([seed, 0x5A]).choice(len(dataset), size=n_images, replace=False))
    # One stream per layer, drawn image by image, so that batching cannot reorder the draws.
    streams = {layer: np.random.default_rng([seed, 0x5A, k + 1]) for k, layer in enumerate(layers)}
    chunks: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
    loader = loader_for(dataset, [int(r) for r in rows], batch_size, num_workers)
    with capture_outputs(model.module, list(layers), stop_early=True) as captured, torch.no_grad():
        for _indices, batch, _bad in tqdm(loader, desc=f"sample {model.spec.id}", unit="batch", leave=False):
            if batch is None:
                continue
            forward_until_captured(model.module, model.normalize(model_inputs(model, batch)), captured)
            for layer in layers:
                mapped = channel_map(captured[layer], model.spec.prefix_tokens).float()
                flat = mapped.flatten(2) if mapped.ndim > 2 else mapped.unsqueeze(2)  # (N, C, P)
                n_positions = flat.shape[2]
                take = min(sample.positions_per_image, n_positions)
                rng = streams[layer]
                picks = np.stack([rng.choice(n_positions, size=take, replace=False) for _ in range(len(flat))])
                index = torch.as_tensor(picks, device=flat.device).unsqueeze(1).expand(-1, flat.shape[1], -1)
                chosen = flat.gather(2, index).transpose(1, 2).reshape(-1, flat.shape[1])
                chunks[layer].append(chosen.cpu().numpy())
    if not any(chunks.values()):
        raise PsychinterpError(f"dataset {dataset.root}: none of the {n_images} sampled images could be decoded")
    return {layer: np.concatenate(parts).astype(np.float32) for layer, parts in chunks.items()}


# --- fitting methods ----------------------------------------------------------


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms > 0, norms, 1)).astype(np.float32)


def _total_variance(x: np.ndarray) -> float:
    return float(((x - x.mean(axis=0)) ** 2).sum()) or 1.0


def _check_size(x: np.ndarray, size: int, method: str) -> None:
    if size > len(x):
        raise ConfigError(f"dictionary method {method}: size {size} exceeds the {len(x)} sampled positions")


def fit_kmeans(x: np.ndarray, config: DictionaryConfig, seed: int) -> Fitted:
    """k-means centroids as unit-norm directions (Klindt et al. 2023)."""
    from sklearn.cluster import KMeans

    _check_size(x, config.size, "kmeans")
    km = KMeans(n_clusters=config.size, n_init=3, random_state=seed).fit(x)
    return Fitted(
        "direction", _unit_rows(km.cluster_centers_), fit={"reconstruction_error": km.inertia_ / _total_variance(x)}
    )


def fit_nmf(x: np.ndarray, config: DictionaryConfig, seed: int) -> Fitted:
    """NMF components of the rectified activations, as unit-norm directions (Colin et al. 2024)."""
    from sklearn.decomposition import NMF

    _check_size(x, config.size, "nmf")
    rectified = np.maximum(x, 0)
    nmf = NMF(n_components=config.size, init="nndsvda", max_iter=400, random_state=seed)
    codes = nmf.fit_transform(rectified)
    error = float(((rectified - codes @ nmf.components_) ** 2).sum()) / _total_variance(rectified)
    # NMF needs non-negative input: record how much of the sample the rectification changed.
    return Fitted(
        "direction",
        _unit_rows(nmf.components_),
        fit={"reconstruction_error": error, "negative_fraction": float(np.mean(x < 0))},
    )


def fit_pca(x: np.ndarray, config: DictionaryConfig, seed: int) -> Fitted:
    """Principal components; each sign chosen so that the sample's mean projects positively."""
    from sklearn.decomposition import PCA

    _check_size(x, min(config.size, x.shape[1]), "pca")
    if config.size > x.shape[1]:
        raise ConfigError(f"dictionary method pca: size {config.size} exceeds the layer's {x.shape[1]} channels")
    pca = PCA(n_components=config.size, random_state=seed).fit(x)
    components = pca.components_.copy()
    projected_mean = components @ x.mean(axis=0)
    largest = components[np.arange(len(components)), np.abs(components).argmax(axis=1)]
    sign = np.where(np.abs(projected_mean) > 1e-8, np.sign(projected_mean), np.sign(largest))
    return Fitted(
        "direction",
        _unit_rows(components * sign[:, None]),
        fit={"reconstruction_error": float(1 - pca.explained_variance_ratio_.sum())},
    )


def train_sae(x: np.ndarray, size: int, settings: SAEConfig, seed: int) -> Fitted:
    """A ReLU sparse autoencoder, ``z = ReLU(W_e (x/s - b_d) + b_e)``, ``x/s ≈ W_d z + b_d``.

    Inputs are scaled by their mean norm ``s``; the loss is the squared error plus ``l1`` times
    the latents weighted by their decoder norms. The encoder is returned folded into raw units,
    ``ReLU((W_e/s) x + (b_e - W_e b_d))``, with the fraction of variance it leaves unexplained,
    the mean number of active latents per position (L0), and the dead latents.
    """
    generator = torch.Generator().manual_seed(seed)
    data = torch.as_tensor(x, dtype=torch.float32)
    scale = float(data.norm(dim=1).mean()) or 1.0
    data = data / scale
    channels = data.shape[1]
    decoder = torch.randn(channels, size, generator=generator)
    decoder = (decoder / decoder.norm(dim=0, keepdim=True) * 0.1).requires_grad_()
    encoder = decoder.detach().T.clone().requires_grad_()
    encoder_bias = torch.zeros(size, requires_grad=True)
    decoder_bias = data.median(dim=0).values.clone().requires_grad_()
    parameters = [encoder, encoder_bias, decoder, decoder_bias]
    optimiser = torch.optim.Adam(parameters, lr=settings.lr)

    def forward(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latents = torch.relu((batch - decoder_bias) @ encoder.T + encoder_bias)
        return latents, latents @ decoder.T + decoder_bias

    for _ in range(settings.steps):
        batch = data[torch.randint(len(data), (settings.batch_size,), generator=generator)]
        latents, reconstruction = forward(batch)
        error = (reconstruction - batch).pow(2).sum(dim=1).mean()
        sparsity = (latents * decoder.norm(dim=0)).sum(dim=1).mean()
        optimiser.zero_grad()
        (error + settings.l1 * sparsity).backward()
        optimiser.step()
    with torch.no_grad():
        latents, reconstruction = forward(data)
        unexplained = float((reconstruction - data).pow(2).sum() / (data - data.mean(dim=0)).pow(2).sum())
        weights = (encoder / scale).numpy().astype(np.float32)
        bias = (encoder_bias - encoder @ decoder_bias).numpy().astype(np.float32)
        fit = {
            "reconstruction_error": unexplained,
            "mean_l0": float((latents > 0).float().sum(dim=1).mean()),
            "dead_latents": float(int(((latents > 0).sum(dim=0) == 0).sum())),
            "input_scale": scale,
        }
    return Fitted("latent", weights, bias, fit)


def fit_sae(x: np.ndarray, config: DictionaryConfig, seed: int) -> Fitted:
    return train_sae(x, config.size, config.sae, seed)


FitMethod = Callable[[np.ndarray, DictionaryConfig, int], Fitted]
FIT_METHODS: dict[str, FitMethod] = {"kmeans": fit_kmeans, "nmf": fit_nmf, "pca": fit_pca, "sae": fit_sae}


# --- files the user brings ----------------------------------------------------

# Names an encoder's weights, bias and (subtracted before encoding) decoder bias go by:
# torch ``nn.Linear`` state dicts, SAELens (whose W_enc is channels x latents), and ours.
_ENCODER_WEIGHTS = {"encoder_weight": False, "encoder.weight": False, "W_enc": True}
_ENCODER_BIAS = ("encoder_bias", "encoder.bias", "b_enc")
_DECODER_BIAS = ("decoder_bias", "b_dec")
_DIRECTIONS = ("directions", "weights", "decoder_weight", "W_dec")
FILE_SUFFIXES = (".npy", ".npz", ".pt", ".pth", ".safetensors")


def _read_arrays(path: Path) -> dict[str, np.ndarray] | np.ndarray:
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        if suffix == ".safetensors":
            from safetensors.numpy import load_file

            return load_file(str(path))
        if suffix in (".pt", ".pth"):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(loaded, torch.Tensor):
                return loaded.float().numpy()
            if isinstance(loaded, Mapping):
                return {str(k): v.float().numpy() for k, v in loaded.items() if isinstance(v, torch.Tensor)}
            raise ConfigError(f"{path}: holds a {type(loaded).__name__}, not a tensor or a dict of tensors")
    except ConfigError:
        raise
    except FileNotFoundError:
        raise ConfigError(f"dictionary file {path}: not found") from None
    except Exception as exc:  # each reader raises its own kind for a damaged file
        raise ConfigError(f"dictionary file {path}: cannot be read as {suffix}: {exc}") from None
    raise ConfigError(f"dictionary file {path}: unsupported type; use one of {list(FILE_SUFFIXES)}")


def _first(arrays: Mapping[str, np.ndarray], names: Sequence[str]) -> tuple[str, np.ndarray] | None:
    return next(((n, arrays[n]) for n in names if n in arrays), None)


def _matrix(path: Path, name: str, array: np.ndarray, channels: int, transposed: bool = False) -> np.ndarray:
    array = np.asarray(array, dtype=np.float32)
    expected = "(channels, size)" if transposed else "(size, channels)"
    if array.ndim != 2 or array.shape[1 - int(transposed)] != channels:
        raise ConfigError(
            f"dictionary file {path}: {name} has shape {tuple(array.shape)}; expected {expected} "
            f"with channels = {channels}, the layer's channel count"
        )
    if not np.all(np.isfinite(array)):
        raise ConfigError(f"dictionary file {path}: {name} holds NaN or infinite values")
    return np.ascontiguousarray(array.T if transposed else array)


def _vector(path: Path, name: str, array: np.ndarray, length: int, what: str) -> np.ndarray:
    array = np.asarray(array, dtype=np.float32).reshape(-1) if np.ndim(array) else np.asarray(array, np.float32)
    if array.shape != (length,):
        raise ConfigError(
            f"dictionary file {path}: {name} has shape {tuple(np.shape(array))}; expected ({length},), {what}"
        )
    if not np.all(np.isfinite(array)):
        raise ConfigError(f"dictionary file {path}: {name} holds NaN or infinite values")
    return array


def read_dictionary_file(path: Path, channels: int) -> Fitted:
    """A dictionary from the user's file, checked against a layer of ``channels`` channels.

    A lone matrix (size x channels), or a mapping holding ``directions``/``W_dec``, gives linear
    directions; a mapping with encoder weights and bias gives latents (docs/units.md).
    """
    arrays = _read_arrays(path)
    if isinstance(arrays, np.ndarray):
        return Fitted("direction", _matrix(path, "the array", arrays, channels))
    encoder = next(((n, t) for n, t in _ENCODER_WEIGHTS.items() if n in arrays), None)
    if encoder is not None:
        name, transposed = encoder
        weights = _matrix(path, name, arrays[name], channels, transposed)
        bias_entry = _first(arrays, _ENCODER_BIAS)
        if bias_entry is None:
            raise ConfigError(f"dictionary file {path}: has {name} but no encoder bias (one of {list(_ENCODER_BIAS)})")
        bias = _vector(path, bias_entry[0], bias_entry[1], len(weights), "one per latent")
        decoder_bias = _first(arrays, _DECODER_BIAS)
        if decoder_bias is not None:  # SAELens encodes x - b_dec: fold it into the bias
            bias = bias - weights @ _vector(path, decoder_bias[0], decoder_bias[1], channels, "one per channel")
        return Fitted("latent", weights, bias.astype(np.float32))
    entry = _first(arrays, _DIRECTIONS) or (next(iter(arrays.items())) if len(arrays) == 1 else None)
    if entry is None:
        raise ConfigError(
            f"dictionary file {path}: holds {sorted(arrays)}; expected one matrix, {list(_DIRECTIONS)[:2]}, "
            f"or encoder weights ({list(_ENCODER_WEIGHTS)}) with a bias"
        )
    return Fitted("direction", _matrix(path, entry[0], entry[1], channels))


# --- storing, loading and binding ---------------------------------------------


def dictionary_file(model_id: str, layer: str, name: str) -> str:
    return f"{DICTIONARIES}/{model_id}__{layer}__{name}.safetensors"


def dictionary_bytes(fitted: Fitted) -> bytes:
    """safetensors bytes: the same vectors always give the same bytes, so the file's hash is their identity."""
    from safetensors.numpy import save

    arrays = {"weights": np.ascontiguousarray(fitted.weights, dtype=np.float32)}
    if fitted.bias is not None:
        arrays["bias"] = np.ascontiguousarray(fitted.bias, dtype=np.float32)
    return save(arrays)


def write_dictionary(out: Path, info: Dictionary, data: bytes) -> None:
    path = out / info.file
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def describe(
    fitted: Fitted, *, name: str, model_id: str, layer: str, method: str, source: str, live: list[int]
) -> Dictionary:
    return Dictionary(
        name=name,
        model_id=model_id,
        layer=layer,
        method=method,
        form=fitted.form,
        size=len(fitted.weights),
        channels=fitted.weights.shape[1],
        file=dictionary_file(model_id, layer, name),
        sha256=hashlib.sha256(dictionary_bytes(fitted)).hexdigest(),
        source=source,
        live=live,
        fit=fitted.fit,
    )


@dataclass(frozen=True)
class LoadedDictionary:
    info: Dictionary
    weights: np.ndarray
    bias: np.ndarray | None

    def selector(self, index: int) -> DirectionSelector | LatentSelector:
        kind = DirectionSelector if self.info.form == "direction" else LatentSelector
        return kind(dictionary=self.info.name, index=index)


def load_dictionary(root: Path, info: Dictionary) -> LoadedDictionary:
    """A dictionary's vectors from a bundle (or build) folder, checked against its record."""
    from safetensors.numpy import load

    path = root / info.file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PsychinterpError(f"dictionary {info.name!r} of {info.model_id}/{info.layer}: {exc}") from None
    if hashlib.sha256(data).hexdigest() != info.sha256:
        raise PsychinterpError(f"{path}: does not match its recorded sha256 (a changed or damaged file)")
    arrays = load(data)
    weights, bias = arrays["weights"], arrays.get("bias")
    return LoadedDictionary(info, weights, bias)


DictionaryTable = Mapping[tuple[str, str], LoadedDictionary]  # (layer, name) -> dictionary, for one model


def bind(unit: UnitRef, dictionaries: DictionaryTable) -> BoundUnit:
    """The unit's layer and readout: a channel as it is, a dictionary row with its vectors."""
    selector = unit.selector
    if isinstance(selector, ChannelSelector):
        return BoundUnit(unit.layer, selector)
    found = dictionaries.get((unit.layer, selector.dictionary))
    if found is None:
        raise PsychinterpError(f"unit {unit.unit_id}: no dictionary {selector.dictionary!r} for layer {unit.layer}")
    row = found.weights[selector.index]
    if selector.kind == "direction":
        return BoundUnit(unit.layer, LinearReadout(row))
    return BoundUnit(unit.layer, LatentReadout(row, float(found.bias[selector.index])))


# --- a model's dictionaries, prepared once per build (the plan stage) ------------


def _layers_of(config: DictionaryConfig, model_id: str, eligible: Sequence[str]) -> list[str]:
    wanted = list(config.files[model_id]) if config.method == "file" else list(config.layers or eligible)
    if unknown := [layer for layer in wanted if layer not in eligible]:
        raise ConfigError(
            f"dictionaries: {config.name!r} names layer(s) {unknown} of model {model_id!r}, "
            f"which are not among its eligible layers {list(eligible)}"
        )
    return wanted


def _source(config: DictionaryConfig, model_id: str, layer: str, sample: DictionarySampleConfig) -> str:
    if config.method == "file":
        return f"file {config.files[model_id][layer]}"
    return (
        f"{config.method} with size {config.size}, fitted on {sample.positions_per_image} positions from each "
        f"of up to {sample.images} images of the dataset"
    )


def prepare_dictionaries(
    model: LoadedModel,
    configs: Sequence[DictionaryConfig],
    eligible: Mapping[str, int],
    dataset: ImageTreeDataset,
    sample: DictionarySampleConfig,
    out: Path,
    seed: int,
    batch_size: int = 32,
    num_workers: int = 0,
) -> list[LoadedDictionary]:
    """Read or fit every dictionary of one model, write them into ``out/dictionaries/``, and describe them.

    ``eligible`` maps the model's eligible layers to their channel counts. One sampling pass
    serves every computed dictionary and the liveness check of every dictionary.
    """
    model_id = model.spec.id
    wanted = [(c, layer) for c in configs for layer in _layers_of(c, model_id, list(eligible))]
    layers = sorted({layer for _, layer in wanted}, key=list(eligible).index)
    positions = sample_positions(model, layers, dataset, sample, seed, batch_size, num_workers)
    loaded = []
    for config, layer in tqdm(wanted, desc=f"dictionaries {model_id}", unit="dictionary", leave=False):
        if config.method == "file":
            fitted = read_dictionary_file(config.files[model_id][layer], eligible[layer])
        else:
            fitted = FIT_METHODS[config.method](positions[layer], config, seed)
        live = fitted.live_rows(positions[layer])
        info = describe(
            fitted,
            name=config.name,
            model_id=model_id,
            layer=layer,
            method=config.method,
            source=_source(config, model_id, layer, sample),
            live=live,
        )
        write_dictionary(out, info, dictionary_bytes(fitted))
        log.info(
            "dictionary %s of %s/%s: %d rows, %d live; %s",
            config.name,
            model_id,
            layer,
            info.size,
            len(live),
            ", ".join(f"{k} {v:.3g}" for k, v in info.fit.items()) or "no fit statistics",
        )
        loaded.append(LoadedDictionary(info, fitted.weights, fitted.bias))
    return loaded
