import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stimuli.errors import PsychinterpError
from stimuli.exemplars import ImageTreeDataset, UnitRef, scan_dataset, select_exemplars
from stimuli.units import sample_units


def test_unit_sampling_is_seeded_distinct_and_in_range():
    layers = [("a", 3), ("b", 5), ("c", 2)]
    first = sample_units("m", layers, 8, seed=0)
    assert first == sample_units("m", layers, 8, seed=0)
    assert first != sample_units("m", layers, 8, seed=1)
    pairs = {(u.layer, u.channel) for u in first}
    assert len(pairs) == 8
    sizes = dict(layers)
    assert all(0 <= u.channel < sizes[u.layer] for u in first)
    assert all(u.n_layers == 3 and u.layer == layers[u.layer_index][0] for u in first)
    assert len(sample_units("m", layers, 10, seed=0)) == 10  # every unit
    with pytest.raises(PsychinterpError, match="asked for 11 units"):
        sample_units("m", layers, 11, seed=0)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(-5, 5, allow_nan=False, width=32), min_size=22, max_size=60),
    references=st.integers(1, 9),
    nan_at=st.lists(st.integers(0, 21), max_size=2),
)
def test_selection_matches_a_brute_force_sort(values, references, nan_at):
    column = np.array(values, dtype=np.float32)
    column[nan_at] = np.nan
    valid = [i for i in range(len(column)) if not np.isnan(column[i])]
    if len(valid) < 2 * (references + 1):
        with pytest.raises(PsychinterpError):
            select_exemplars(column, references)
        return
    chosen = select_exemplars(column, references)
    brute_asc = sorted(valid, key=lambda i: (column[i], i))
    brute_desc = brute_asc[::-1]
    assert chosen.max_references.tolist() == brute_desc[:references]
    assert chosen.min_references.tolist() == brute_asc[:references]
    assert chosen.max_query == brute_desc[references]
    assert chosen.min_query == brute_asc[references]
    picked_max = {*chosen.max_references.tolist(), chosen.max_query}
    picked_min = {*chosen.min_references.tolist(), chosen.min_query}
    assert not picked_max & picked_min


def test_scan_skips_undecodable_images_and_matches_direct_activations(tmp_path):
    from stimuli import registry
    from stimuli.demo_data import write_demo_dataset
    from stimuli.specs import ModelSpec
    from tests.conftest import TINY_MODEL

    root = write_demo_dataset(tmp_path / "images", images_per_class=3)
    (root / "gratings" / "broken.jpg").write_bytes(b"not a jpeg")
    spec = ModelSpec.model_validate(TINY_MODEL)
    torch.manual_seed(0)
    path = tmp_path / "w.pt"
    torch.save(registry.build_architecture(spec).state_dict(), path)
    model = registry.load_model(spec, path)
    dataset = ImageTreeDataset(root)
    units = [UnitRef("layer1.0", 3), UnitRef("layer2.1", 100), UnitRef("layer1.0", 7)]
    result = scan_dataset(model, units, dataset, tmp_path / "acts.npy", batch_size=5)
    assert result.skipped == 1
    broken = dataset.paths.index(next(p for p in dataset.paths if p.name == "broken.jpg"))
    assert np.isnan(result.activations[broken]).all()
    assert np.isfinite(np.delete(result.activations, broken, axis=0)).all()
    assert result.activations.shape == (13, 3) and result.activations.dtype == np.float32
    index = 0 if broken != 0 else 1
    image = torch.from_numpy(np.asarray(dataset[index][1])).float().div(255)[None]
    direct = registry.unit_activations(model, image, {"layer1.0": [3, 7], "layer2.1": [100]})
    np.testing.assert_allclose(
        result.activations[index],
        [direct["layer1.0"][0, 0], direct["layer2.1"][0, 0], direct["layer1.0"][0, 1]],
        rtol=1e-4,
        atol=1e-5,
    )
