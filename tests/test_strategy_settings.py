"""Strategies that declare themselves (utils/samplers/registry.py): their settings are typed keys of
every script that can run them, listed, checked, recorded and read by the rule as ``ctx.params``; a
setting of a strategy the run does not use is refused; what a strategy needs is a typed Need."""

import json

import numpy as np
import pytest
import torch
from conftest import ENTRY, run_main, tiny_context

import config
import config.deepal
import config.lfosa
import config.rethinking
import main_al
from utils.core.config import Key
from utils.core.sweep import child_argv
from utils.samplers import get_strategy, list_strategies, registry
from utils.samplers.registry import Need, Params, register_scorer


def test_every_strategy_setting_is_a_key_of_every_script_that_can_run_the_strategy():
    """deepal and rethinking run every strategy they serve (hooks too); the LfOSA scripts those
    without networks of their own; each key has one definition, shared by the strategies declaring it."""
    served = {"main_al.py --protocol deepal": (config.deepal.SERVES, True),
              "main_al.py --protocol rethinking": (config.rethinking.SERVES, True),
              "AL_center.py": (config.lfosa.SERVES["AL_center.py"], False),
              "AL_center_temperature.py": (config.lfosa.SERVES["AL_center_temperature.py"], False)}
    for script, (serves, hooks) in served.items():
        tree = config.tree(script)
        runnable = [get_strategy(name) for name in list_strategies()]
        runnable = [s for s in runnable if not s.missing(serves) and (hooks or s.training is None)]
        assert set(tree.owners) == {key for s in runnable for key in s.keys(hooks)}, script
        for strategy in runnable:
            for key in strategy.keys(hooks):
                assert strategy.name in tree.owners[key], (script, strategy.name, key)
    assert config.tree("main_TOD.py").owners == {"TOD_CYCLE0": ("TOD",)}
    assert config.tree("main_al.py --protocol deepal").owners["GCN_HIDDEN_UNITS"] == ("CoreGCN", "UncertainGCN")
    # an epoch count of a hook follows the script's epochs (scaled by --epochs)
    assert config.tree("main_al.py --protocol deepal").keys["LL_DETACH_EPOCH"].per_epochs == "N_EPOCH"
    assert config.tree("main_al.py --protocol rethinking").keys["LL_DETACH_EPOCH"].per_epochs == "EPOCHS"


@pytest.mark.parametrize("script,argv,message", [
    ("AL_center.py", ["--set", "CORESET_OUTLIER_FRACTION=0.1"],
     "--set CORESET_OUTLIER_FRACTION: CORESET_OUTLIER_FRACTION is a setting of CoreSet, which this run does not use "
     "(QUERY_STRATEGY AV_based); drop it"),
    ("main_al.py --protocol deepal", ["--asal_steps", "5"], "--asal_steps: ASAL_STEPS is a setting of ASAL"),
    ("main_al.py --protocol rethinking", ["--al-method", "coreset", "--set", "CORESET_TIME_LIMIT=3"],
     "(AL_METHOD coreset: KCenterGreedy); drop it"),  # the seed's coreset is the greedy k-center
    ("main_al.py --protocol deepal", ["--strategy", "ssl_LC", "--set", "BATCHBALD_SAMPLES=5"],
     "(STRATEGY ssl_LC: LeastConfidence)"),
    ("main_TOD.py", ["--sampling", "RANDOM", "--tod-cycle0", "highest"], "TOD_CYCLE0 is a setting of TOD"),
    ("main_al.py --protocol deepal", ["--set", "CORESET_TIME_LIMIT=0"], "CORESET_TIME_LIMIT expects a number > 0"),
    ("main_LL4AL.py", ["--set", "LL_DETACH_EPOCH=3"], "LL_DETACH_EPOCH is a setting of main_al.py --protocol deepal, "
     "not of main_LL4AL.py"),  # (its own EPOCHL is the same detach epoch)
])
def test_a_strategy_setting_is_checked_and_refused_for_a_run_without_the_strategy(tmp_path, capsys, script, argv,
                                                                                 message):
    module, base, folder_flag = ENTRY[script]
    out = tmp_path / "out"
    code, _, err = run_main(script, [*base, *argv, folder_flag, str(out)], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


def test_the_settings_of_the_run_s_strategy_are_listed_and_accepted(capsys):
    code, out, _ = run_main("AL_center.py", ["--dataset", "digits", "--query-strategy", "CoreSet",
                                             "--set", "CORESET_OUTLIER_FRACTION=0.1", "--list-settings"], capsys)
    assert code == 0
    line = next(line for line in out.splitlines() if line.startswith("CORESET_OUTLIER_FRACTION"))
    assert "= 0.1" in line and "(--set CORESET_OUTLIER_FRACTION)" in line
    code, out, _ = run_main("main_al.py --protocol deepal", ["--help"], capsys)
    assert code == 0 and "the query strategies' own settings" in out and "CoreSet: CORESET_OUTLIER_FRACTION=0.0001" in \
        " ".join(out.split())


@pytest.mark.slow
def test_al_center_hands_its_strategy_the_settings_and_records_them(tmp_path, capsys, monkeypatch):
    """The issue's example: AL_center.py --query-strategy CoreSet --set CORESET_OUTLIER_FRACTION=0.1 runs
    CoreSet with that fraction (it silently ran on the module default before) and config.json records it."""
    from utils.samplers import coreset

    seen, real = [], coreset.robust_kcenter_solve
    monkeypatch.setattr(coreset, "robust_kcenter_solve", lambda *a, **k: seen.append(k) or real(*a, **k))
    out = tmp_path / "run"
    code, _, err = run_main("AL_center.py", ["--dataset", "digits", "--known-class", "5", "--query-strategy",
                                             "CoreSet", "--set", "CORESET_OUTLIER_FRACTION=0.1", "--set",
                                             "CORESET_TIME_LIMIT=2", "--max-epoch", "1", "--max-query", "1",
                                             "--query-batch", "10", "--set", "WIDTH=4", "--out", str(out)], capsys)
    assert code == 0, err
    assert seen == [{"outlier_fraction": 0.1, "time_limit": 2.0}]
    settings = json.loads((out / "config.json").read_text())["settings"]
    assert settings["CORESET_OUTLIER_FRACTION"] == 0.1 and settings["BATCHBALD_SAMPLES"] == 10_000


def test_a_rule_reads_its_settings_as_typed_params_from_the_run_s_settings():
    ctx = tiny_context(np.arange(10, 50), 4)
    ctx.settings.update(CLUSTER_MARGIN_KM=3, CORESET_TIME_LIMIT=9.0)
    seen = {}
    rule = get_strategy("ClusterMarginSampling").positions
    monkeypatched = registry.with_params(lambda c: seen.setdefault("params", c.params) and [0, 1, 2, 3],
                                         "CLUSTER_MARGIN", get_strategy("ClusterMarginSampling").params)
    monkeypatched(ctx)
    params = seen["params"]
    assert params.km == 3 and params.clusters == 20 and params.pick == "lowest" and params["CLUSTER_MARGIN_KM"] == 3
    assert set(params) == {"CLUSTER_MARGIN_KM", "CLUSTER_MARGIN_CLUSTERS", "CLUSTER_MARGIN_PICK"}
    with pytest.raises(AttributeError, match="frozen"):
        params.km = 4
    with pytest.raises(AttributeError, match="no strategy setting"):
        _ = params.time_limit  # CoreSet's, not this strategy's
    assert ctx.params is None and rule is not None  # the caller's context is left as it was


def test_a_new_strategy_with_a_parameter_reaches_every_script_by_registering_alone():
    """The README's recipe: the rule's module and its test, nothing else."""
    try:
        @register_scorer("ToyScores", aliases=("toy",), needs=(Need.STATE,),
                         params={"WEIGHT": Key(2.0, "ToyScores: the weight of the score", above=0)})
        def toy(ctx):
            return ctx.params.weight * torch.arange(len(ctx.candidates), dtype=torch.float32)

        tree = config.tree("main_al.py --protocol deepal")
        assert tree.keys["TOYSCORES_WEIGHT"].default == 2.0 and tree.owners["TOYSCORES_WEIGHT"] == ("ToyScores",)
        ctx = tiny_context(np.arange(10, 20), 2)
        ctx.settings["TOYSCORES_WEIGHT"] = -1.0
        assert get_strategy("toy").select(ctx).tolist() == [10, 11]  # a negative weight: the first ones
        assert "TOYSCORES_WEIGHT" in config.tree("AL_center.py").keys  # LfOSA's scripts keep a state too
        with pytest.raises(ValueError, match="declares TOYSCORES_WEIGHT differently"):
            register_scorer("ToyScores2", prefix="TOYSCORES", params={"WEIGHT": Key(3.0, "other")})(toy)
    finally:
        for name in ("ToyScores", "ToyScores2"):
            registry._REGISTRY.pop(name, None)
        for alias in ("toyscores", "toy", "toyscores2"):
            registry._NAMES.pop(alias, None)
        registry._KEYS.pop("TOYSCORES_WEIGHT", None)
    with pytest.raises(TypeError, match="Need members"):
        register_scorer("Bad", needs=("state",))(toy)
    registry._NAMES.pop("bad", None)


def test_a_sweep_hands_each_strategy_only_its_own_settings():
    args, cfg = main_al.parse_args(["--protocol", "deepal", "--dataset", "digits", "--strategy", "CoreSet,ASAL"])
    others = main_al.strategy_settings_of_others(cfg, get_strategy("CoreSet"))
    assert "ASAL_STEPS" in others and "CORESET_TIME_LIMIT" not in others
    argv = ["--strategy", "CoreSet,ASAL", "--asal-steps", "5", "--set", "CORESET_TIME_LIMIT=2", "--set",
            "SEED=3"]
    drop = {"--strategy": True, **dict.fromkeys(main_al.setting_flags(cfg, others), True), "--set": others}
    assert child_argv(argv, drop, ["--strategy", "CoreSet"]) == ["--set", "CORESET_TIME_LIMIT=2", "--set", "SEED=3",
                                                                 "--strategy", "CoreSet"]


def test_params_compare_and_show_their_values():
    params = Params("X", {"X_A": 1, "X_B_C": "b"})
    assert params.a == 1 and params.b_c == "b" and params == {"X_A": 1, "X_B_C": "b"} and "X_B_C" in repr(params)
