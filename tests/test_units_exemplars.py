import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import PsychinterpError
from contracts.units import ChannelSelector, UnitRef, channel, unit_id
from stimuli.exemplars import ImageTreeDataset, scan_dataset, select_exemplars
from stimuli.units import sample_units


def test_unit_sampling_is_seeded_distinct_and_in_range():
    layers = [("a", 3), ("b", 5), ("c", 2)]
    first = sample_units("m", layers, 8, seed=0)
    assert first == sample_units("m", layers, 8, seed=0)
    assert first != sample_units("m", layers, 8, seed=1)
    pairs = {(u.layer, u.selector.channel) for u in first}
    assert len(pairs) == 8
    sizes = dict(layers)
    assert all(0 <= u.selector.channel < sizes[u.layer] for u in first)
    assert all(u.n_layers == 3 and u.layer == layers[u.layer_index][0] for u in first)
    assert len(sample_units("m", layers, 10, seed=0)) == 10  # every unit
    with pytest.raises(PsychinterpError, match="asked for 11 units"):
        sample_units("m", layers, 11, seed=0)


@settings(max_examples=80, deadline=None)
@given(
    values=st.lists(st.floats(-5, 5, allow_nan=False, width=32), min_size=30, max_size=90),
    batches=st.integers(1, 3),
    per_batch=st.integers(1, 4),
    queries=st.sampled_from(["easy", "extreme", "hard85", 14]),
    nan_at=st.lists(st.integers(0, 29), max_size=2),
)
def test_selection_matches_a_brute_force_sort(values, batches, per_batch, queries, nan_at):
    column = np.array(values, dtype=np.float32)
    column[nan_at] = np.nan
    valid = [i for i in range(len(column)) if not np.isnan(column[i])]
    try:
        chosen = select_exemplars(column, batches, per_batch, queries, seed=0)
    except PsychinterpError:
        return
    ascending = sorted(valid, key=lambda i: (column[i], i))  # brute force, stable on ties
    k = batches * per_batch
    start = {"easy": k + 1, "extreme": 1, "hard85": int(0.15 * len(valid)) + 1, 14: 14}[queries]
    if queries == "extreme":
        ref_ranks, query_ranks = range(batches + 1, batches + k + 1), range(1, batches + 1)
    else:
        ref_ranks, query_ranks = range(1, k + 1), range(start, start + batches)
    for side, order in ((chosen.max_side, ascending[::-1]), (chosen.min_side, ascending)):
        assert len(side) == batches
        refs = [i for b in side for i in b.references]
        assert sorted(refs) == sorted(order[r - 1] for r in ref_ranks)  # exactly the top/bottom K
        assert sorted(b.query for b in side) == sorted(order[r - 1] for r in query_ranks)
        for b in side:
            assert [order[r - 1] for r in b.reference_ranks] == list(b.references)
            assert order[b.query_rank - 1] == b.query
            # one image per bin, most extreme bin first
            bins = [(r - ref_ranks[0]) // batches for r in b.reference_ranks]
            assert bins == list(range(per_batch))
    picked_max = {i for b in chosen.max_side for i in (*b.references, b.query)}
    picked_min = {i for b in chosen.min_side for i in (*b.references, b.query)}
    assert not picked_max & picked_min
    assert chosen == select_exemplars(column, batches, per_batch, queries, seed=0)


def test_query_presets_follow_the_2023_study():
    column = np.arange(100_000, dtype=np.float32)
    chosen = select_exemplars(column, 20, 9, "easy")
    assert sorted(b.query_rank for b in chosen.max_side) == list(range(181, 201))
    assert max(r for b in chosen.max_side for r in b.reference_ranks) == 180
    for preset, percentile in (("hard99", 0.01), ("hard95", 0.05), ("hard85", 0.15)):
        chosen = select_exemplars(column, 20, 9, preset)
        assert min(b.query_rank for b in chosen.min_side) == int(percentile * 100_000) + 1
        assert sorted(b.query for b in chosen.min_side) == list(
            range(int(percentile * 100_000), int(percentile * 100_000) + 20)
        )
    with pytest.raises(PsychinterpError, match="inside the 180 references"):
        select_exemplars(np.arange(1000, dtype=np.float32), 20, 9, "hard85")


def test_weighting_by_layer_size_prefers_wide_layers():
    layers = [("narrow", 4), ("wide", 400)]
    uniform = sample_units("m", layers, 20, seed=0)
    weighted = sample_units("m", layers, 20, seed=0, weight_by_layer_size=True)
    assert sum(u.layer == "narrow" for u in uniform) >= 3
    assert sum(u.layer == "narrow" for u in weighted) <= 2
    assert uniform[0].unit_id == f"m__{uniform[0].layer}__{uniform[0].selector.channel}"
    assert unit_id("clip rn50", "visual/layer1.0", ChannelSelector(channel=3)) == "clip-rn50__visual-layer1.0__3"


def test_scan_skips_undecodable_images_and_matches_direct_activations(tmp_path):
    from stimuli import registry
    from stimuli.demo.images import write_demo_dataset
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
    units = [
        UnitRef(model_id="m", layer=layer, selector=channel(c))
        for layer, c in [("layer1.0", 3), ("layer2.1", 100), ("layer1.0", 7)]
    ]
    result = scan_dataset(model, units, dataset, tmp_path / "acts.npy", batch_size=5)
    assert result.skipped == 1
    broken = dataset.paths.index(next(p for p in dataset.paths if p.name == "broken.jpg"))
    assert np.isnan(result.activations[broken]).all()
    assert np.isfinite(np.delete(result.activations, broken, axis=0)).all()
    assert result.activations.shape == (13, 3) and result.activations.dtype == np.float32
    index = 0 if broken != 0 else 1
    image = torch.from_numpy(np.asarray(dataset[index][1])).float().div(255)[None]
    direct = registry.unit_activations(model, image, {"layer1.0": [channel(3), channel(7)], "layer2.1": [channel(100)]})
    np.testing.assert_allclose(
        result.activations[index],
        [direct["layer1.0"][0, 0], direct["layer2.1"][0, 0], direct["layer1.0"][0, 1]],
        rtol=1e-4,
        atol=1e-5,
    )


def test_sampled_units_round_trip_and_read_the_work_records_of_builds_before_selectors():
    from stimuli.units import SampledUnit

    unit = sample_units("m", [("a", 3), ("b", 5)], 1, seed=0)[0]
    assert SampledUnit.model_validate(unit.model_dump(mode="json")) == unit
    legacy = {"model_id": "m", "layer": "b", "channel": 4, "layer_index": 1, "n_layers": 2}
    old = SampledUnit.model_validate(legacy)
    assert old.selector == channel(4) and old.unit_id == "m__b__4"
    assert old.for_model("n").ref == UnitRef(model_id="n", layer="b", selector=channel(4))


def test_selectors_compute_each_unit_in_the_order_asked_and_check_the_layer_size():
    import torch

    from stimuli.selectors import readout_activations, readout_positions, readout_problem

    mapped = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 2, 2)
    acts = readout_activations(mapped, [channel(2), channel(0)])
    assert torch.equal(acts, mapped.mean(dim=(2, 3))[:, [2, 0]])
    assert torch.equal(readout_positions(mapped, channel(1)), mapped[:, 1])
    assert readout_problem(channel(2), 3) is None
    assert "outside the layer's 3 channels" in readout_problem(channel(3), 3)
