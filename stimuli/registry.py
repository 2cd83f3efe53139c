"""Create models by id from their ``ModelSpec``; list their units; read activations.

Follows timm's split: the architecture comes from ``source`` + ``constructor``;
pretrained weights come from a local file or, when online, from the hub.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from contracts.errors import PsychinterpError
from stimuli.compat import LUCENT_MISSING, ensure_torchvision_importable
from stimuli.specs import ModelSpec

ensure_torchvision_importable()

import torch  # noqa: E402
from torch import nn  # noqa: E402

from stimuli.selectors import Readout, readout_activations  # noqa: E402


class WeightsError(PsychinterpError):
    """A weights file exists but cannot be used."""


class WeightsUnavailableError(PsychinterpError):
    """No local weights file, and the hub could not be reached."""


@dataclass(frozen=True)
class Layer:
    name: str
    channels: int
    layout: str  # "conv" (N, C, H, W), "tokens" (N, L, C) or "vector" (N, C)
    index: int  # position among the eligible layers, from the input


@dataclass
class LoadedModel:
    spec: ModelSpec
    module: nn.Module

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Map [0, 1] RGB images to the model's input space."""
        p = self.spec.preprocessing
        mean = torch.tensor(p.mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        std = torch.tensor(p.std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        return (images - mean) / std

    @property
    def input_size(self) -> int:
        return self.spec.preprocessing.crop

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device


# --- building ---------------------------------------------------------------


def _offline() -> bool:
    return any(os.environ.get(k, "") not in ("", "0") for k in ("PSYCHINTERP_OFFLINE", "HF_HUB_OFFLINE"))


def _on(device: str | torch.device | None):
    """Create parameters directly on ``device`` (``meta`` for counting without memory)."""
    return torch.device(device) if device else contextlib.nullcontext()


def _torchvision(spec: ModelSpec, hub_weights: bool, device) -> nn.Module:
    import torchvision

    with _on(device):
        return torchvision.models.get_model(
            spec.constructor, weights=spec.weights if hub_weights else None, **spec.constructor_kwargs
        )


def _timm(spec: ModelSpec, hub_weights: bool, device) -> nn.Module:
    import timm

    name = f"{spec.constructor}.{spec.weights}" if spec.weights else spec.constructor
    with _on(device):
        return timm.create_model(name, pretrained=hub_weights, **spec.constructor_kwargs)


def _timm_file(spec: ModelSpec, path: Path) -> nn.Module:
    import timm

    name = f"{spec.constructor}.{spec.weights}" if spec.weights else spec.constructor
    try:
        # timm's own loader applies its checkpoint filters (e.g. original ViT layouts).
        return timm.create_model(
            name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **spec.constructor_kwargs
        )
    except (RuntimeError, KeyError, ValueError) as exc:
        raise WeightsError(f"{path}: does not fit model {spec.id!r}: {str(exc)[:300]}") from None


@contextlib.contextmanager
def _quiet_root_logger():
    """open_clip warns "No pretrained weights loaded" on the root logger whenever it builds an architecture alone."""
    root = logging.getLogger()
    before = root.level
    root.setLevel(max(logging.ERROR, before))
    try:
        yield
    finally:
        root.setLevel(before)


def _open_clip(spec: ModelSpec, hub_weights: bool, device) -> nn.Module:
    import open_clip

    pretrained = spec.weights if hub_weights else None
    with _quiet_root_logger() if pretrained is None else contextlib.nullcontext():
        clip = open_clip.create_model(
            spec.constructor, pretrained=pretrained, device=device or "cpu", **spec.constructor_kwargs
        )
    return clip.visual


def _open_clip_file(spec: ModelSpec, path: Path) -> nn.Module:
    import open_clip

    try:
        # open_clip reads its own formats, including OpenAI's TorchScript archives.
        clip = open_clip.create_model(spec.constructor, pretrained=str(path), **spec.constructor_kwargs)
    except (RuntimeError, KeyError, ValueError, EOFError) as exc:
        raise WeightsError(f"{path}: does not fit model {spec.id!r}: {str(exc)[:300]}") from None
    return clip.visual


def _lucent(spec: ModelSpec, hub_weights: bool, device) -> nn.Module:
    try:
        from lucent.modelzoo import inceptionv1
    except ModuleNotFoundError as exc:
        raise PsychinterpError(LUCENT_MISSING.format(reason=exc)) from None

    if spec.constructor != "inceptionv1":
        raise PsychinterpError(f"model {spec.id!r}: lucent source only provides 'inceptionv1'")
    with _on(device):
        return inceptionv1(pretrained=hub_weights, **spec.constructor_kwargs)


def _psychinterp(spec: ModelSpec, hub_weights: bool, device) -> nn.Module:
    from stimuli.demo.family import create_model

    with _on(device):
        return create_model(spec.constructor, **spec.constructor_kwargs)


def _python(spec: ModelSpec, hub_weights: bool, device) -> nn.Module:
    """Any importable callable ``package.module:callable`` (or ``module:Class.method``) that returns a module."""
    from stimuli.python_models import resolve_constructor

    build = resolve_constructor(spec)
    with _on(device):
        try:
            module = build(**spec.constructor_kwargs)
        except Exception as exc:  # the user's code: any exception means "cannot build this entry"
            raise PsychinterpError(
                f"model {spec.id!r}: {spec.constructor}(**constructor_kwargs) raised {type(exc).__name__}: "
                f"{str(exc)[:300]}"
            ) from None
    if not isinstance(module, nn.Module):
        raise PsychinterpError(
            f"model {spec.id!r}: {spec.constructor} returned {type(module).__name__}, not a torch.nn.Module"
        )
    return module


@dataclass(frozen=True)
class Source:
    """How one ``source:`` of models.yaml makes architectures and reads weights.

    ``build(spec, hub_weights, device)`` returns the architecture, with the hub's weights when
    ``hub_weights``; ``read_file(spec, path)``, when a source has its own checkpoint formats, builds
    the model from a weights file (otherwise the file is read as a state dict); ``hub`` is False
    for sources whose weights only come from a file.
    """

    build: Callable[[ModelSpec, bool, str | torch.device | None], nn.Module]
    read_file: Callable[[ModelSpec, Path], nn.Module] | None = None
    hub: bool = True
    where_weights_come_from: str = ""  # said when a source without a hub has no weights file


# One table from source name to builder; its keys are exactly specs.ModelSource (a test holds that).
SOURCES: dict[str, Source] = {
    "torchvision": Source(_torchvision),
    "timm": Source(_timm, read_file=_timm_file),
    "open_clip": Source(_open_clip, read_file=_open_clip_file),
    "lucent": Source(_lucent),
    "psychinterp": Source(
        _psychinterp, hub=False, where_weights_come_from="train them with `psychinterp train-family`"
    ),
    "python": Source(_python, hub=False, where_weights_come_from="save the model's state dict to a file"),
}


def _construct(spec: ModelSpec, hub_weights: bool, device: str | torch.device | None = None) -> nn.Module:
    """Build the architecture; with ``hub_weights``, also fetch the pretrained weights."""
    return SOURCES[spec.source].build(spec, hub_weights, device)


def build_architecture(spec: ModelSpec) -> nn.Module:
    """The architecture with random weights (for tests and for saving fresh weights)."""
    return _prepare(_construct(spec, hub_weights=False))


@cache
def _parameter_count_cached(spec_json: str) -> int:
    spec = ModelSpec.model_validate_json(spec_json)
    module = _construct(spec, hub_weights=False, device="meta")
    return sum(p.numel() for p in module.parameters())


def parameter_count(spec: ModelSpec) -> int:
    """Parameters of the analysed module (the vision tower for CLIP), built on the meta device."""
    return _parameter_count_cached(spec.model_dump_json())


def _prepare(module: nn.Module) -> nn.Module:
    # In-place activations would overwrite a hooked layer's output after the hook ran.
    for sub in module.modules():
        if getattr(sub, "inplace", None) is True:
            sub.inplace = False
    return module.eval().requires_grad_(False)


# --- weights ----------------------------------------------------------------

_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "module", "net")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A flat tensor dict from a state-dict file or a training checkpoint."""
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw = load_file(str(path))
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for bad files
        raise WeightsError(f"{path}: not a readable weights file ({type(exc).__name__}: {exc})") from None
    while isinstance(raw, Mapping) and not any(isinstance(v, torch.Tensor) for v in raw.values()):
        inner = next((raw[k] for k in _CHECKPOINT_KEYS if isinstance(raw.get(k), Mapping)), None)
        if inner is None:
            raise WeightsError(f"{path}: no state dict found (top-level keys: {sorted(raw)[:10]})")
        raw = inner
    if not isinstance(raw, Mapping):
        raise WeightsError(f"{path}: expected a state dict, found {type(raw).__name__}")
    return {k: v for k, v in raw.items() if isinstance(v, torch.Tensor)}


def _strip_prefix(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Drop the wrapper prefix (``module.``, ``model.``, ``visual.`` ...) that matches most keys."""
    counts = Counter({"": sum(k in expected for k in state)})
    for key in state:
        for i, ch in enumerate(key):
            if ch == "." and key[i + 1 :] in expected:
                counts[key[: i + 1]] += 1
    # On a tie the shorter prefix wins: `module.model.` over `module.attacker.model.`.
    best = max(counts, key=lambda prefix: (counts[prefix], -len(prefix)))
    return {k[len(best) :]: v for k, v in state.items() if k.startswith(best)}


def load_weights_file(module: nn.Module, path: Path, model_id: str) -> None:
    expected = module.state_dict()
    state = _strip_prefix(read_state_dict(path), set(expected))
    missing = [k for k in expected if k not in state]
    if missing:
        raise WeightsError(
            f"{path}: does not fit model {model_id!r}: {len(missing)} missing key(s), e.g. {missing[:3]}"
        )
    try:
        module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise WeightsError(f"{path}: does not fit model {model_id!r}: {str(exc)[:300]}") from None


def _hub_label(spec: ModelSpec) -> str | None:
    return spec.weights_url or spec.weights


def load_model(
    spec: ModelSpec, weights_file: str | Path | None = None, device: str | torch.device = "cpu"
) -> LoadedModel:
    """Load a model with pretrained weights: the local file if given, else the hub."""
    path = Path(weights_file) if weights_file else spec.weights_file
    if path is not None and not path.is_file():
        raise WeightsError(
            f"{spec.where()}: weights file not found: {path}; fix weights_file in the models file, or give "
            f"--weights {spec.id}=PATH"
        )
    if path is not None:
        source = SOURCES[spec.source]
        if source.read_file is not None:
            module = source.read_file(spec, path)
        else:
            module = _construct(spec, hub_weights=False)
            load_weights_file(module, path, spec.id)
    else:
        module = _load_from_hub(spec)
    return LoadedModel(spec=spec, module=_prepare(module).to(device))


def _load_from_hub(spec: ModelSpec) -> nn.Module:
    label = _hub_label(spec)
    advice = (
        f"Save the weights to a file and set `weights_file:` for {spec.id!r} in models.yaml "
        f"(or pass --weights {spec.id}=PATH)."
    )
    source = SOURCES[spec.source]
    if spec.weights_url is None and not source.hub:
        raise WeightsUnavailableError(
            f"model {spec.id!r}: source {spec.source!r} has no hub, and no weights file is given; "
            f"{source.where_weights_come_from} and set `weights_file:` (or pass --weights {spec.id}=PATH)."
        )
    if label is None:
        raise WeightsUnavailableError(f"model {spec.id!r} has neither a weights tag nor a weights file. {advice}")
    if _offline():
        raise WeightsUnavailableError(f"model {spec.id!r}: offline and no local weights file. {advice}")
    try:
        if spec.weights_url:
            cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(spec.weights_url).name
            if not cached.is_file():
                cached.parent.mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(spec.weights_url, str(cached))
            module = _construct(spec, hub_weights=False)
            load_weights_file(module, cached, spec.id)
            return module
        return _construct(spec, hub_weights=True)
    except WeightsError:
        raise
    except Exception as exc:  # network stacks raise many types; all mean "not available"
        raise WeightsUnavailableError(
            f"model {spec.id!r}: no local weights file, and fetching {label!r} failed "
            f"({type(exc).__name__}: {str(exc)[:200]}). {advice}"
        ) from None


# --- layers and activations --------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """``*`` stays within one dotted part, ``**`` spans parts, ``?`` is one character."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append(r"[^.]*")
            i += 1
        elif pattern[i] == "?":
            out.append(r"[^.]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out.append(pattern[i : end + 1])
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def matching_module_names(module: nn.Module, include: Sequence[str], exclude: Sequence[str] = ()) -> list[str]:
    inc = [_pattern_regex(p) for p in include]
    exc = [_pattern_regex(p) for p in exclude]
    return [
        name
        for name, _ in module.named_modules()
        if name and any(r.match(name) for r in inc) and not any(r.match(name) for r in exc)
    ]


def module_names_hint(module: nn.Module, wanted: Sequence[str]) -> str:
    """The module names a layer pattern may use: the nearest to ``wanted``, then the first few."""
    import difflib

    names = [name for name, _ in module.named_modules() if name]
    near = list(dict.fromkeys(m for w in wanted for m in difflib.get_close_matches(w, names, n=3, cutoff=0.5)))
    shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
    return (f"did you mean {', '.join(near)}? " if near else "") + f"the model's modules: {shown}"


def _first_tensor(output: object) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise PsychinterpError(f"layer output is {type(output).__name__}, not a tensor")


def channel_map(output: torch.Tensor, prefix_tokens: int) -> torch.Tensor:
    """Bring a layer output to (N, C, *spatial) with prefix tokens removed."""
    if output.ndim == 4:
        return output
    if output.ndim == 3:
        return output[:, prefix_tokens:, :].transpose(1, 2)
    if output.ndim == 2:
        return output
    raise PsychinterpError(f"layer output has unsupported shape {tuple(output.shape)}")


def _layout(output: torch.Tensor) -> str:
    return {4: "conv", 3: "tokens", 2: "vector"}.get(output.ndim, "unsupported")


class _AllCaptured(Exception):
    """Raised by a hook once every requested output is in: the rest of the forward is not needed."""


@contextlib.contextmanager
def capture_outputs(
    module: nn.Module, layer_names: Sequence[str], stop_early: bool = False
) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of named submodules; the hooks are removed on exit.

    With ``stop_early``, run forwards through :func:`forward_until_captured`,
    which ends each forward as soon as every requested output is recorded.
    """
    captured: dict[str, torch.Tensor] = {}
    modules = dict(module.named_modules())
    unknown = [n for n in layer_names if n not in modules]
    if unknown:
        raise PsychinterpError(f"no such layer(s): {unknown}")
    wanted = set(layer_names)
    handles = []
    for name in layer_names:

        def hook(_mod: nn.Module, _inp: object, out: object, name: str = name) -> None:
            captured[name] = _first_tensor(out)
            if stop_early and wanted <= captured.keys():
                raise _AllCaptured

        handles.append(modules[name].register_forward_hook(hook))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def forward_until_captured(module: nn.Module, inputs: torch.Tensor, captured: dict[str, torch.Tensor]) -> None:
    captured.clear()
    try:
        module(inputs)
    except _AllCaptured:
        pass


def eligible_layers(model: LoadedModel) -> list[Layer]:
    """The layers matching the spec's patterns, in forward order, with channel counts."""
    names = matching_module_names(model.module, model.spec.layers.include, model.spec.layers.exclude)
    if not names:
        hint = module_names_hint(model.module, model.spec.layers.include)
        raise PsychinterpError(
            f"{model.spec.where()}: no module matches layers.include {model.spec.layers.include}"
            f"{' (less layers.exclude)' if model.spec.layers.exclude else ''}; {hint}"
        )
    probe = torch.zeros(1, 3, model.input_size, model.input_size, device=model.device)
    with capture_outputs(model.module, names) as captured, torch.no_grad():
        model.module(model.normalize(probe))
    layers = []
    # Hooks fill `captured` as the forward reaches each layer, so its order is the forward order.
    for i, name in enumerate(captured):
        mapped = channel_map(captured[name], model.spec.prefix_tokens)
        layers.append(Layer(name=name, channels=mapped.shape[1], layout=_layout(captured[name]), index=i))
    return layers


def unit_activations(
    model: LoadedModel, images: torch.Tensor, units: Mapping[str, Sequence[Readout]]
) -> dict[str, torch.Tensor]:
    """Activation of each requested unit: its spatial mean, or token mean without prefix tokens.

    ``images`` are [0, 1] RGB at the model's input size; ``units`` maps a layer to the selectors
    wanted there (their readouts, :mod:`stimuli.selectors`); returns {layer: (N, len(selectors))}.
    """
    with capture_outputs(model.module, list(units), stop_early=True) as captured, torch.no_grad():
        forward_until_captured(model.module, model.normalize(images.to(model.device)), captured)
        return {
            layer: readout_activations(channel_map(captured[layer], model.spec.prefix_tokens), readouts)
            for layer, readouts in units.items()
        }
