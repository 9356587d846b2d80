"""Latency-aware pruning: the allocator and the cache on synthetic latency tables (deterministic), the ladder
measurement and the prune loop on tiny models (correctness, not timing precision), the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxprune
from onnxprune import api, latency
from onnxprune.allocate import Candidate, first_reaching, greedy_path, importance_lost
from onnxprune.cli import main
from onnxprune.errors import OptionError
from onnxprune.latency import Deployment, GroupLatency, LatencyProfile
from onnxprune.latency_target import next_plan, prune_to_latency, target_fraction
from onnxprune.plan import aligned_widths, plan_widths

from oracle_check import assert_matches_oracle, run

MODELS = Path(__file__).resolve().parents[1] / "models"
TINY = MODELS / "resnet_tiny_ts.onnx"


# ---- the allocator, on synthetic tables --------------------------------------------------------------------------


def plan_for(candidates, dense_ms, goal_ms):
    """The first plan on the greedy path predicted at or under the goal (the last one when none is)."""
    path = greedy_path(candidates, dense_ms)
    return path[first_reaching([p.predicted_ms for p in path], goal_ms)]


def test_allocator_takes_the_least_importance_per_millisecond_first():
    cheap = Candidate(1, [8, 16, 24, 32], [9.0, 4.0, 1.0, 0.0], [3.0, 2.0, 1.0, 0.0])  # 1 per ms, then 3, then 5
    dear = Candidate(2, [8, 16], [8.0, 0.0], [4.0, 0.0])  # 2 per ms
    plan = plan_for([cheap, dear], dense_ms=10.0, goal_ms=9.0)
    assert plan.widths == {1: 24} and plan.predicted_ms == pytest.approx(9.0)
    plan = plan_for([cheap, dear], dense_ms=10.0, goal_ms=5.0)  # 1 ms from cheap, then dear's 4 ms at 2/ms
    assert plan.widths == {1: 24, 2: 8} and plan.predicted_ms == pytest.approx(5.0) and plan.loss == pytest.approx(9.0)


def test_allocator_looks_past_a_flat_stretch_of_the_ladder():
    flat = Candidate(1, [8, 16, 24, 32], [3.0, 2.0, 1.0, 0.0], [4.0, 0.0, 0.0, 0.0])  # only 8 saves: 3 per 4 ms
    other = Candidate(2, [8, 16], [10.0, 0.0], [4.0, 0.0])
    plan = plan_for([flat, other], dense_ms=10.0, goal_ms=7.0)
    assert plan.widths == {1: 8}


def test_allocator_ends_where_no_step_saves_more():
    only = Candidate(1, [8, 16], [1.0, 0.0], [2.0, 0.0])
    plan = plan_for([only], dense_ms=10.0, goal_ms=5.0)  # out of reach: the last plan, predicted above the goal
    assert plan.widths == {1: 8} and plan.predicted_ms == pytest.approx(8.0)
    assert plan_for([only], dense_ms=10.0, goal_ms=10.0).widths == {}


def test_importance_lost_sums_the_lowest_normalized_scores():
    scores = np.array([4.0, 1.0, 2.0, 1.0])  # mean 2: normalized 2, 0.5, 1, 0.5
    assert importance_lost(scores, [1, 2, 4]) == pytest.approx([2.0, 1.0, 0.0])


# ---- widths in plan.py -------------------------------------------------------------------------------------------


def test_aligned_widths_and_plan_widths_keep_the_best_channels():
    model = onnx.load(str(TINY))
    work = api._load_work(model, None, None, None, None, None)
    analysis, scores = work.analysis, api._scores(work, "l1")
    group = next(g for g in analysis.groups if g.prunable and g.size == 32)
    assert aligned_widths(group, analysis.spaces, 8) == [8, 16, 24, 32]
    assert aligned_widths(group, analysis.spaces, 8, min_channels=9, max_ratio=0.5) == [16, 24, 32]
    plan = plan_widths(analysis.groups, scores, {group.id: 8})
    kept = plan.decisions[group.id].kept
    assert len(kept) == 8 and set(kept) == set(np.argsort(-scores[group.id], kind="stable")[:8])
    assert [d.group for d in plan.pruned] == [group.id]
    # the other prunable groups keep every channel, and the plan says so (a plan file of it names every group)
    assert set(plan.decisions) == {g.id for g in analysis.groups if g.prunable}
    with pytest.raises(ValueError):
        plan_widths(analysis.groups, scores, {group.id: 33})


def test_prune_with_widths_matches_the_masking_oracle():
    model = onnx.load(str(TINY))
    result = assert_matches_oracle(model, widths={6: 8, 7: 16, 1: 4})
    kept = {g.id: g.kept for g in result.report.groups}
    assert kept[6] == 8 and kept[7] == 16 and kept[1] == 4
    assert all(g.kept == g.channels for g in result.report.groups if g.id not in (1, 6, 7))


# ---- the latency model and its cache -----------------------------------------------------------------------------


def test_group_latency_interpolates_and_extends_the_first_segment():
    g = GroupLatency(3, 32, [8, 16, 32], [4.0, 6.0, 10.0], "measured")
    assert g.at(32) == 10.0 and g.at(16) == 6.0 and g.at(24) == pytest.approx(8.0)
    assert g.at(4) == pytest.approx(3.0) and g.at(-100) == 0.0
    assert g.saved(8) == pytest.approx(6.0)
    profile = LatencyProfile({}, 10.0, {3: g})
    assert profile.predict({3: 16}) == pytest.approx(6.0) and profile.predict({}) == 10.0


def test_monotone_ladder_and_rungs():
    assert latency.monotone([0.5, 0.4, 0.9, 1.0]) == pytest.approx([0.45, 0.45, 0.9, 1.0])
    assert latency.monotone([0.2, 0.6, 1.1, 1.0]) == pytest.approx([0.2, 0.6, 1.05, 1.05])
    assert latency.ladder([8, 16, 24, 32, 40, 48, 56, 64], 64) == [16, 32, 48]
    assert latency.ladder([16, 20], 20) == [16]


def _synthetic_profile(key) -> LatencyProfile:
    groups = {gid: GroupLatency(gid, size, [0, size], [1.0, 2.0], "macs") for gid, size in
              ((0, 8), (1, 8), (2, 8), (3, 16), (4, 16), (5, 16), (6, 32), (7, 32))}
    return LatencyProfile(key, 2.0, groups, 12.5, 7)


def test_the_cache_is_reused_for_the_same_key_and_never_for_another(tmp_path, monkeypatch):
    model = onnx.load(str(TINY))
    deployment = Deployment("cpu", 1, 1)
    key = latency.profile_key(model, deployment)
    assert key["device"] and key["model_sha256"] == latency.model_hash(model)
    path = latency.cache_path(tmp_path, key)
    latency.save_profile(_synthetic_profile(key), path)
    widths = {g: [1, s] for g, s in ((0, 8), (6, 32))}

    def no_measuring(*args, **kwargs):
        raise AssertionError("a cached profile must be reused")

    monkeypatch.setattr(latency, "measure_profile", no_measuring)
    profile = latency.get_profile(model, widths, {}, 1, deployment, cache_dir=tmp_path)
    assert profile.reused and profile.dense_ms == 2.0 and profile.path == str(path)
    assert "reused" in profile.cost_text()
    other = latency.cache_path(tmp_path, latency.profile_key(model, Deployment("cpu", 1, 2)))
    assert other != path
    with pytest.raises(AssertionError, match="cached profile"):
        latency.get_profile(model, widths, {}, 1, Deployment("cpu", 1, 2), cache_dir=tmp_path)


@pytest.mark.parametrize("noises, cached", [((0.03, 0.05, 0.6), True), ((0.2, 0.3, 0.02), False)])
def test_a_profile_measured_on_a_busy_machine_is_not_cached(tmp_path, monkeypatch, noises, cached):
    model = onnx.load(str(TINY))
    deployment = Deployment("cpu", 1, 1)
    key = latency.profile_key(model, deployment)

    def measured(*args, **kwargs):
        profile = _synthetic_profile(key)
        for group, noise in zip(profile.groups.values(), noises):
            group.noise = noise
        return profile

    monkeypatch.setattr(latency, "measure_profile", measured)
    profile = latency.get_profile(model, {0: [1, 8]}, {}, 1, deployment, cache_dir=tmp_path)
    assert latency.cache_path(tmp_path, key).exists() == cached
    assert any("not cached" in note for note in profile.notes) != cached


def test_a_profile_from_another_machine_is_used_with_a_warning(tmp_path):
    model = onnx.load(str(TINY))
    key = dict(latency.profile_key(model, Deployment()), device="Some Other CPU")
    file = tmp_path / "shared.json"
    latency.save_profile(_synthetic_profile(key), file)
    warnings = []
    profile = latency.get_profile(model, {0: [1, 8]}, {}, 1, Deployment(), profile_file=file, warn=warnings.append)
    assert profile.dense_ms == 2.0
    assert len(warnings) == 1 and "Some Other CPU" in warnings[0] and "identical machines" in warnings[0]
    with pytest.raises(OptionError, match="does not cover"):
        latency.get_profile(model, {0: [1, 9]}, {}, 1, Deployment(), profile_file=file)


# ---- measuring on a tiny model (correctness, not precision) ------------------------------------------------------


def test_measured_ladder_on_a_tiny_model(tmp_path):
    model = onnx.load(str(TINY))
    work = api._load_work(model, None, None, None, None, None)
    analysis, cost = work.analysis, work.cost_before
    widths = {g.id: aligned_widths(g, analysis.spaces, 8) for g in analysis.groups if g.prunable}
    widths = {g: w for g, w in widths.items() if len(w) > 1}
    macs = api.group_macs(analysis, cost)
    key = latency.profile_key(model, Deployment())
    profile = latency.measure_profile(model, widths, macs, cost.macs, Deployment(), key, rounds=1, runs=1,
                                      min_mac_share=0.12)
    assert profile.dense_ms > 0 and profile.models_timed > 0 and profile.cost_s > 0
    assert set(profile.groups) == set(widths)
    sources = {g.source for g in profile.groups.values()}
    assert sources == {"measured", "macs"} and any("modelled from their MACs" in n for n in profile.notes)
    for gid, g in profile.groups.items():
        assert g.widths[-1] == widths[gid][-1] and g.ms[-1] == pytest.approx(profile.dense_ms)
        assert all(a <= b + 1e-12 for a, b in zip(g.ms, g.ms[1:]))  # monotone
        if g.source == "measured":
            assert set(g.widths[:-1]) <= set(widths[gid])
    narrowed = latency.narrowed(model, {6: 8})
    onnx.checker.check_model(narrowed)
    feeds = {"input": np.zeros((1, 3, 32, 32), np.float32)}
    assert run(narrowed, feeds)[0].shape == run(model, feeds)[0].shape
    again = LatencyProfile.from_dict(json.loads(json.dumps(profile.to_dict())))
    assert again.predict({6: 8}) == pytest.approx(profile.predict({6: 8}))


PATH_MS = [10.0, 9.0, 8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]  # predicted ms along a greedy path, dense at 0


@pytest.mark.parametrize("measured, expected", [
    ({5: 0.6}, 6),  # 1 ms too slow: aim 1 ms lower
    ({3: 0.9}, 7),  # the model overestimated the savings: aim 4 ms lower
    ({4: 0.3}, 2),  # too fast: aim higher
    ({2: 0.7, 8: 0.3}, 5),  # between a plan too slow and one too fast: interpolated
    ({2: 0.51, 5: 0.1}, 3),  # ... and strictly between them
    ({3: 0.45, 5: 0.6}, 2),  # noise: a later plan measured slower; the faster one counts
])
def test_next_plan_moves_by_the_miss_then_between_the_nearest_measured(measured, expected):
    assert next_plan(measured, PATH_MS, 0.5, 10.0) == (expected, "")


@pytest.mark.parametrize("measured, reason", [
    ({5: 0.6, 6: 0.4}, "no plan lies between the one measured at 0.600 of dense and the next, measured at 0.400"),
    ({9: 0.9}, "the target cannot be reached: every group is at the narrowest width allowed"),
    ({1: 0.3}, "the smallest narrowing the allocation makes already measured 0.300 of dense"),
])
def test_next_plan_says_why_no_plan_is_left(measured, reason):
    index, why = next_plan(measured, PATH_MS, 0.5, 10.0)
    assert index is None and reason in why


def test_greedy_path_passes_through_skipped_widths_one_at_a_time():
    flat = Candidate(1, [8, 16, 24, 32], [3.0, 2.0, 1.0, 0.0], [4.0, 0.0, 0.0, 0.0])  # 32 -> 8 is one choice
    other = Candidate(2, [8, 16], [10.0, 0.0], [4.0, 0.0])
    path = greedy_path([flat, other], dense_ms=10.0)
    assert [p.widths for p in path] == [{}, {1: 24}, {1: 16}, {1: 8}, {1: 8, 2: 8}]
    assert [p.predicted_ms for p in path] == pytest.approx([10.0, 10.0, 10.0, 6.0, 2.0])
    assert [p.loss for p in path] == pytest.approx([0.0, 1.0, 2.0, 3.0, 13.0])
    assert plan_for([flat, other], 10.0, 7.0).widths == {1: 8}  # the first plan on the path that gets there


def test_target_fraction_options():
    assert target_fraction(0.5, None) == 0.5 and target_fraction(None, 4.0) == 0.25
    assert target_fraction(None, None) is None
    for args in ((0.5, 2.0), (1.0, None), (None, 1.0)):
        with pytest.raises(OptionError):
            target_fraction(*args)


def test_prune_to_latency_on_a_tiny_model(tmp_path):
    steps = []
    result = prune_to_latency(str(TINY), 0.6, Deployment(), round_to=8, cache_dir=tmp_path, budget_s=60,
                              max_steps=2, check_rounds=2, groups_checked=2, progress=steps.append)
    report = result.latency
    assert 1 <= len(report.steps) <= 2 and report.measured_fraction > 0
    busy = any("not cached" in note for note in report.notes)  # a tiny model's runs on a busy machine
    assert bool(report.profile_path) != busy and bool(list(tmp_path.glob("*.json"))) != busy
    assert report.reached == (abs(report.measured_fraction - 0.6) <= 0.05 * 0.6)
    narrowed = {g.id: g.kept for g in result.report.groups if g.kept < g.channels}
    assert narrowed and all(kept % 8 == 0 for kept in narrowed.values())
    assert {r.group for r in report.groups} == set(narrowed)
    assert any(r.measured_saved_ms is not None for r in report.groups)
    assert report.groups_noise is not None and "negative ones included, are noise" in report.format()
    data = result.report.to_dict()["latency"]
    assert data["target"] == 0.6 and data["groups"] and "predicted_fraction" in data
    assert "latency target 0.6" in report.format()
    onnx.checker.check_model(result.model)


def test_cli_prune_latency_target(tmp_path, capsys):
    out = tmp_path / "fast.onnx"
    main(["prune", str(TINY), "-o", str(out), "--speedup", "1.5", "--round-to", "8", "--latency-cache",
          str(tmp_path / "cache"), "--latency-budget", "0", "--json", "--plan-out", str(tmp_path / "plan.json"),
          "--report", str(tmp_path / "card")])
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["latency"]["target"] == pytest.approx(1 / 1.5) and out.exists()
    assert data["before"]["size_bytes"] == TINY.stat().st_size  # on disk, as plain prune says
    card = json.loads((tmp_path / "card" / "report.json").read_text())  # the plan and card name the source file
    assert card["source"]["path"] == str(TINY) and card["totals"]["before"]["size_bytes"] == TINY.stat().st_size
    main(["apply-plan", str(TINY), str(tmp_path / "plan.json"), "-o", str(tmp_path / "again.onnx")])
    assert (tmp_path / "again.onnx").read_bytes() == out.read_bytes()
    assert "latency profile: measured" in data["latency"]["profile"] and "modelled from their MACs" in captured.err
    if not data["latency"]["reached"]:  # a tiny model on a busy machine: said on stderr, beside the JSON
        assert "latency target not reached" in captured.err


@pytest.mark.parametrize("args, message", [
    (["--latency-target", "0.5", "--ratio", "0.3"], "--ratio and --latency-target"),
    (["--threads", "2"], "--threads is for --latency-target"),
    (["--latency-target", "1.5"], "--latency-target must be in (0, 1)"),
    (["--speedup", "0.5"], "--speedup must be more than 1"),
    (["--unstructured", "--sparsity", "0.5", "--speedup", "2"], "structured pruning"),
])
def test_cli_latency_option_errors(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["prune", str(TINY), "-o", str(tmp_path / "x.onnx")] + args)
    assert exit_info.value.code == 1
    assert message in capsys.readouterr().err


def test_latency_target_with_finetune_epochs_tunes_the_model_the_loop_kept(tmp_path):
    from cli_run import assert_ok, run

    out = tmp_path / "x.onnx"
    result = run("prune", "models/digits_cnn.onnx", "-o", str(out), "--latency-target", "0.5", "--round-to", "8",
                 "--calib", "models/digits_calib.npz", "--calib-samples", "64", "--finetune-epochs", "1",
                 "--latency-budget", "0", "--latency-cache", str(tmp_path / "cache"), "--json")
    assert_ok(result)
    data = json.loads(result.stdout)
    assert data["finetune"]["train_samples"] + data["finetune"]["heldout_samples"] == 64
    assert len(data["finetune"]["epochs"]) == 2 and data["latency"]["steps"]
    kept = {g["id"]: g["kept"] for g in data["groups"] if g["kept"] < g["channels"]}
    assert kept == {g["group"]: g["kept"] for g in data["latency"]["groups"]}  # the loop's plan, tuned
    assert "fine-tuning the kept model" in result.stderr
    onnx.checker.check_model(onnx.load(str(out)))


def test_latency_target_finetune_needs_data_before_any_timing(tmp_path):
    from cli_run import assert_error, run

    assert_error(run("prune", "models/digits_cnn.onnx", "-o", str(tmp_path / "x.onnx"), "--latency-target", "0.5",
                     "--finetune-epochs", "1"), 1, "fine-tuning needs training inputs")


def test_cli_prune_latency_target_says_each_thing_once(tmp_path, capsys):
    out = tmp_path / "fast.onnx"
    main(["prune", str(TINY), "-o", str(out), "--speedup", "1.5", "--round-to", "8", "--latency-cache",
          str(tmp_path / "cache"), "--latency-budget", "0"])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert text.count("of dense (±5%) on cpu") == 1, text
    notes = [line for line in text.splitlines() if line.startswith("note: ")]
    assert notes and len(notes) == len(set(notes)), notes


def test_the_report_says_when_the_latency_model_was_far_off(tmp_path, monkeypatch):
    from onnxprune import latency_target

    monkeypatch.setattr(latency_target, "measure_fraction", lambda *args, **kwargs: (0.95, 0.01))
    result = prune_to_latency(str(TINY), 0.5, Deployment(), round_to=8, cache_dir=tmp_path, budget_s=0,
                              max_steps=2, check_rounds=2, groups_checked=0)
    assert any("latency model was far off" in note for note in result.latency.notes)
    assert not result.latency.reached


def test_the_loop_walks_the_path_until_a_measurement_lands_within_the_tolerance(tmp_path, monkeypatch):
    from onnxprune import latency_target

    fractions = iter([0.9, 0.2, 0.52])  # too slow, too fast, then within 5% of 0.5
    monkeypatch.setattr(latency_target, "measure_fraction", lambda *args, **kwargs: (next(fractions), 0.01))
    result = prune_to_latency(str(TINY), 0.5, Deployment(), round_to=8, cache_dir=tmp_path, budget_s=0,
                              check_rounds=2, groups_checked=0)
    first, second, third = result.latency.steps
    assert first.plan < third.plan < second.plan and result.latency.reached
    assert result.latency.measured_fraction == 0.52
    assert not any("closest" in note for note in result.latency.notes)


def test_the_loop_says_when_no_plan_lies_between_two_measured_ones(tmp_path, monkeypatch):
    from onnxprune import latency_target

    calls = []

    def fraction(*args, **kwargs):  # every plan measures too slow but the second, which is too fast
        calls.append(1)
        return (0.3 if len(calls) == 2 else 0.7), 0.01

    monkeypatch.setattr(latency_target, "measure_fraction", fraction)
    result = prune_to_latency(str(TINY), 0.5, Deployment(), round_to=8, cache_dir=tmp_path, budget_s=0,
                              check_rounds=2, groups_checked=0, max_steps=20)
    steps = result.latency.steps
    assert not result.latency.reached and len(steps) < 20
    assert any("no plan lies between" in note for note in result.latency.notes), result.latency.notes
    assert steps[-1].plan == steps[1].plan - 1 and steps[0].plan < steps[1].plan
