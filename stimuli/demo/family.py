"""A model family of our own: small CNNs of increasing width and depth, trained on shapes world.

The architectures are registered under ``source: psychinterp`` in models.yaml, like any
torchvision or timm model; their weights are files that :func:`train_family` writes (there
is no hub to fetch them from). Training runs on the CPU in minutes and is cached: a weights
file is reused while its training recipe and dataset are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from contracts.errors import PsychinterpError
from stimuli.demo.shapes_world import CLASSES

INPUT_SIZE = 64
ARCHITECTURE_VERSION = 1  # bump when ShapesNet changes, so that cached weights are retrained
# Weights trained by `psychinterp train-family` with the default data and recipe, shipped with the
# package with their sidecars: a first demo copies them instead of training, when the sidecar's
# architecture, recipe and training-data fingerprint match (a different Pillow can change the data).
SHIPPED_WEIGHTS = Path(__file__).parent / "weights"


class ConvBlock(nn.Module):
    """(2x max-pool,) 3x3 conv, batch norm, ReLU. Its ``norm`` output, before the ReLU, is the unit layer:
    its channels can go negative, so their least activating images are ranked, not tied at zero, and
    feature visualisation always has a gradient to follow."""

    def __init__(self, c_in: int, c_out: int, pool: bool):
        super().__init__()
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(c_out)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(self.pool(x))))


class ShapesNet(nn.Module):
    """A VGG-style network: stages of ``blocks`` conv blocks, each stage after the first halving the size.

    Units live in ``stages.<stage>.<block>.norm``.
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 64), blocks: int = 1, num_classes: int = len(CLASSES)):
        super().__init__()
        stages = []
        c_in = 3
        for i, width in enumerate(widths):
            stage = []
            for j in range(blocks):
                stage.append(ConvBlock(c_in, width, pool=i > 0 and j == 0))
                c_in = width
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(images).mean(dim=(2, 3)))


CONSTRUCTORS: dict[str, Callable[..., nn.Module]] = {"shapesnet": ShapesNet}


def create_model(constructor: str, **kwargs) -> nn.Module:
    """The registry's entry point for ``source: psychinterp``."""
    if constructor not in CONSTRUCTORS:
        raise PsychinterpError(f"source psychinterp has no constructor {constructor!r}; known: {sorted(CONSTRUCTORS)}")
    try:
        return CONSTRUCTORS[constructor](**kwargs)
    except TypeError as exc:
        raise PsychinterpError(f"constructor {constructor!r}: bad constructor_kwargs ({exc})") from None


@dataclass(frozen=True)
class FamilyMember:
    id: str
    widths: tuple[int, ...]
    blocks: int

    def spec_entry(self, weights_file: Path | None, train_images: int, val_accuracy: float | None = None) -> dict:
        """The models.yaml entry of this member (without ``weights_file`` when None)."""
        metadata: dict = {"train_images": train_images}
        if val_accuracy is not None:
            metadata["top1_note"] = f"not ImageNet; held-out shapes-world accuracy {val_accuracy:.1%}"
        entry = {
            "id": self.id,
            "display_name": f"ShapesNet-{self.id.rsplit('_', 1)[-1].upper()} ({'/'.join(map(str, self.widths))}"
            f" x{self.blocks})",
            "source": "psychinterp",
            "constructor": "shapesnet",
            "constructor_kwargs": {"widths": list(self.widths), "blocks": self.blocks},
            "preprocessing": {"resize": INPUT_SIZE, "crop": INPUT_SIZE, "mean": [0.5] * 3, "std": [0.25] * 3},
            "layers": {"include": ["stages.*.*.norm"]},
            "metadata": metadata,
        }
        if weights_file is not None:
            entry["weights_file"] = weights_file.as_posix()
        return entry


# Width and depth grow together: about 6k, 24k, 73k and 163k parameters.
FAMILY = (
    FamilyMember("shapesnet_xs", (8, 16, 32), 1),
    FamilyMember("shapesnet_s", (16, 32, 64), 1),
    FamilyMember("shapesnet_m", (16, 32, 64), 2),
    FamilyMember("shapesnet_l", (24, 48, 96), 2),
)


@dataclass(frozen=True)
class TrainingRecipe:
    epochs: int = 6
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 5e-4
    seed: int = 0


DEFAULT_RECIPE = TrainingRecipe()


def load_image_folder(root: Path, size: int = INPUT_SIZE) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """All images of an ImageFolder tree as one uint8 (N, 3, size, size) tensor, with labels and class names."""
    from PIL import Image

    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise PsychinterpError(f"{root}: no class folders (expected an ImageFolder tree)")
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / name).iterdir()):
            try:
                with Image.open(path) as image:
                    pixels = image.convert("RGB").resize((size, size), Image.BILINEAR)
            except OSError as exc:
                raise PsychinterpError(f"{path}: not a readable image ({exc})") from None
            images.append(np.asarray(pixels))
            labels.append(label)
    if not images:
        raise PsychinterpError(f"{root}: the class folders hold no images")
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels), classes


def _normalise(batch: torch.Tensor) -> torch.Tensor:
    return (batch.float() / 255 - 0.5) / 0.25


def train_model(
    member: FamilyMember,
    images: torch.Tensor,
    labels: torch.Tensor,
    recipe: TrainingRecipe,
    progress: bool = False,
) -> tuple[nn.Module, list[float]]:
    """Train one member with AdamW and a one-cycle schedule; random flips and shifts as augmentation."""
    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(recipe.seed)
    torch.manual_seed(recipe.seed)
    model = ShapesNet(member.widths, member.blocks, num_classes=int(labels.max()) + 1)
    # channels_last makes CPU convolutions about 1.5x faster here.
    model = model.to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    steps_per_epoch = max(1, len(images) // recipe.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, recipe.learning_rate, total_steps=recipe.epochs * steps_per_epoch
    )
    losses = []
    model.train()
    for _ in tqdm(range(recipe.epochs), desc=f"training {member.id}", disable=not progress, leave=False):
        order = torch.randperm(len(images), generator=generator)
        total = 0.0
        for step in range(steps_per_epoch):
            index = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
            batch = _normalise(images[index])
            flip = torch.rand(len(batch), generator=generator) < 0.5
            batch = torch.where(flip[:, None, None, None], batch.flip(3), batch)
            dy, dx = torch.randint(-6, 7, (2,), generator=generator).tolist()
            batch = torch.roll(batch, shifts=(dy, dx), dims=(2, 3)).contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(batch), labels[index])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item()
        losses.append(total / steps_per_epoch)
    return model.to(memory_format=torch.contiguous_format).eval(), losses


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model(_normalise(images[start : start + batch_size]))
        correct += int((logits.argmax(1) == labels[start : start + batch_size]).sum())
    return correct / len(images)


def _tree_fingerprint(root: Path) -> str:
    """Names and sizes of every file: changes when the dataset does, without reading the images."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(f"{path.relative_to(root).as_posix()}:{path.stat().st_size}\n".encode())
    return digest.hexdigest()


def _sidecar(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _matches(record: dict, wanted: dict) -> bool:
    """Whether a sidecar records the architecture, member, recipe and training data wanted now."""
    return {k: record.get(k) for k in wanted} == json.loads(json.dumps(wanted))


def train_family(
    train_root: Path,
    val_root: Path,
    weights_dir: Path,
    members: Sequence[FamilyMember] = FAMILY,
    recipe: TrainingRecipe = DEFAULT_RECIPE,
    progress: bool = False,
    log: Callable[[str], None] = print,
    shipped: Path | None = SHIPPED_WEIGHTS,
) -> list[dict]:
    """Train each member, or reuse its cached (or shipped) weights; returns their models.yaml entries.

    Each weights file has a JSON sidecar with the recipe, dataset fingerprint, losses and
    held-out accuracy; a mismatch with the current recipe or data means retraining. ``shipped``:
    a folder of weights with sidecars to copy from when they match (None: train anew).
    """
    weights_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = _tree_fingerprint(train_root)
    data = None
    entries = []
    for member in members:
        weights = weights_dir / f"{member.id}.pt"
        sidecar = weights.with_suffix(".json")
        wanted = {
            "architecture": ARCHITECTURE_VERSION,
            "member": asdict(member),
            "recipe": asdict(recipe),
            "train_data": fingerprint,
        }
        record = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        if not (weights.is_file() and _matches(record, wanted)) and shipped is not None:
            shipped_record = _sidecar(shipped / f"{member.id}.json")
            if (shipped / f"{member.id}.pt").is_file() and _matches(shipped_record, wanted):
                tmp = weights.with_suffix(".tmp")
                shutil.copyfile(shipped / f"{member.id}.pt", tmp)
                tmp.replace(weights)
                sidecar.write_text(json.dumps(shipped_record, indent=2))
                record = shipped_record
                log(f"{member.id}: the shipped weights (held-out accuracy {record['val_accuracy']:.1%})")
        if not weights.is_file() or not _matches(record, wanted):
            if data is None:
                data = load_image_folder(train_root), load_image_folder(val_root)
            (train_x, train_y, classes), (val_x, val_y, _) = data
            torch.set_num_threads(max(1, torch.get_num_threads()))
            started = time.perf_counter()
            model, losses = train_model(member, train_x, train_y, recipe, progress=progress)
            record = {
                **wanted,
                "classes": classes,
                "losses": losses,
                "val_accuracy": accuracy(model, val_x, val_y),
                "train_images": len(train_x),
                "seconds": round(time.perf_counter() - started, 1),
            }
            tmp = weights.with_suffix(".tmp")
            torch.save(model.state_dict(), tmp)
            tmp.replace(weights)
            sidecar.write_text(json.dumps(record, indent=2))
            log(
                f"trained {member.id} in {record['seconds']} s: held-out accuracy {record['val_accuracy']:.1%} "
                f"({len(classes)} classes)"
            )
        entries.append(member.spec_entry(weights, record["train_images"], record["val_accuracy"]))
    return entries


@dataclass(frozen=True)
class FamilyData:
    """Images per class of the three shapes-world trees; each tree has its own seed."""

    train: int = 300
    val: int = 50
    pool: int = 100  # the exemplar pool a study scans


DEFAULT_DATA = FamilyData()


def prepare_family(
    root: Path,
    data: FamilyData = DEFAULT_DATA,
    recipe: TrainingRecipe = DEFAULT_RECIPE,
    members: Sequence[FamilyMember] = FAMILY,
    progress: bool = False,
    log: Callable[[str], None] = print,
    retrain: bool = False,
) -> Path:
    """Shapes-world trees under ``root/shapes/{train,val,pool}``, trained weights under ``root/weights``,
    and ``root/models.yaml`` registering the members; returns the models file. Cached throughout;
    the shipped weights are used where they match, unless ``retrain``."""
    import yaml

    from stimuli.demo.shapes_world import write_shapes_world

    shapes = root / "shapes"
    for seed, (split, per_class) in enumerate(asdict(data).items(), start=1):
        write_shapes_world(shapes / split, per_class, seed=seed)
    shipped = None if retrain else SHIPPED_WEIGHTS
    entries = train_family(
        shapes / "train", shapes / "val", root / "weights", members, recipe, progress, log, shipped=shipped
    )
    for entry in entries:  # relative, so the folder can move
        entry["weights_file"] = Path(entry["weights_file"]).relative_to(root).as_posix()
    models_file = root / "models.yaml"
    text = "# Written by psychinterp train-family: the project's own model family.\n" + yaml.safe_dump(
        {"models": entries}, sort_keys=False
    )
    write_if_changed(models_file, text)
    return models_file


def write_if_changed(path: Path, text: str) -> None:
    """Leave an identical file alone, so its modification time still says when it last changed."""
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
