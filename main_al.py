"""Pool-based deep active learning with any registered strategy, under two protocols.

--protocol deepal: the 20-strategy toolkit (cure-lab deep-active-learning; spec 003, sections 1-4)

    N <- pool size; L <- int(nStart% of N) random samples; f_0 <- a fresh network (seeded)
    for round r = 0 .. R   (R = ceil((nEnd% - nStart%) N / (nQuery% N))):
        f <- a copy of f_0 trained on L for n_epoch epochs
             (SGD lr, momentum, wd 5e-4; lr x gamma at each milestone; gradients clamped to 0.1)
        test f
        if r < R: L <- L + strategy(f, U) with nQuery% of N labels (the last round: what is left)

    python main_al.py --protocol deepal --model ResNet18 --dataset cifar10 --strategy BadgeSampling \\
        --nStart 10 --nQuery 1 --nEnd 20

--protocol rethinking (the default): Simeoni et al., ICPR'20 (spec B)

    L <- the class-balanced split file --split (al-budget labels); optionally DeepCluster weights W_pre
    for cycle c = 0 .. al-nb-cycles - 1:
        f <- a fresh network (its trunk <- W_pre with --add-unsupervised-pretraining)
        train f for --epochs epochs: SGD 0.2 Nesterov, wd 2e-4, per-iteration cosine LR to 0 at epoch 210;
            supervised: batches of 32 from L (+ CEAL's confident pseudo-labels of the last cycle)
            --add-lp: label propagation on a kNN graph of f's features at the start and after every
            epoch; batches of 78 pseudo-labelled (drawn ~ certainty) + 50 labeled, loss weighted
        test f
        L <- L + al-budget queried by --al-method (random, uncertainty_entropy, coreset, jlp, or any
             registered strategy); --add-ceal: confident unlabeled samples get f's label for cycle c+1

    python main_al.py --dataset cifar10 --al-method uncertainty_entropy --split 0 --al-budget 100
    python main_al.py --make-splits --dataset cifar10 --nr-splits 10 --split-size 1000

--oracle human | folder: a person answers (utils/core/oracles.py). L <- PATH/labeled/; after each
query the run writes <out>/to_label/cycle<C>.csv and .png and stops (human: fill in the labels, then
--resume) or waits (folder: move the images into PATH/labeled/<class>/); the answers join L at the
start of the next cycle ("unknown" ones are set aside).

    python main_al.py --protocol deepal --dataset folder:PATH --oracle human --strategy BadgeSampling \\
        --query-size 50 --out runs/mine
"""

import copy
import os
import sys

import numpy as np

import config
from utils.core import distributed
from utils.core.cli import ArgumentParser, file_setting, parse_script_args, positive, run_cli
from utils.core.errors import UserError
from utils.core.loop import default_out, start_run
from utils.core.oracles import AnnotatorOracle, open_set
from utils.core.results import ResultsFolder
from utils.core.rng import seed_everything
from utils.core.sweep import Job, Shard, child_argv, end_with_parent, finished, run_jobs, strategy_list
from utils.core.train import cohen_kappa, evaluate, predict, softmax_probs, stop_predictions, stop_set
from utils.methods import features
from utils.protocols.deepal import DeepAL
from utils.protocols.rethinking import Rethinking
from utils.samplers import QueryContext, get_strategy, list_strategies
from utils.samplers.registry import Need

PROTOCOLS = {"rethinking": Rethinking, "deepal": DeepAL}


def parse_args(argv=None):
    """(run-control args, frozen settings) of the chosen protocol's tree (config/rethinking.py or
    config/deepal.py)."""
    first = ArgumentParser(add_help=False)
    first.add_argument("--protocol", type=str.lower, choices=PROTOCOLS, default=None)
    given = first.parse_known_args(argv)[0].protocol or (file_setting(argv, "PROTOCOL") or "").lower()
    protocol = PROTOCOLS.get(given, PROTOCOLS["rethinking"])  # (a wrong PROTOCOL: the settings refuse it)

    def run_args(parser):
        protocol.add_run_args(parser)
        parser.epilog = (f"strategies of --protocol {protocol.NAME} ({protocol.STRATEGY_FLAG}; A,B,C or all sweeps "
                         f"them): {', '.join(protocol.supported_strategies())}{protocol.STRATEGY_NOTE}")
        parser.add_argument("--answers", default=None, metavar="FILE",
                            help="--oracle human, --resume: read the answers to the last query from FILE (a Label "
                                 "Studio export, JSON, JSON-MIN or CSV, or the filled CSV; default: "
                                 "<out>/to_label/cycle<C>.export.json or .export.csv when there, else cycle<C>.csv)")
        group = parser.add_argument_group("sweeps (several strategies: --strategy A,B,C or all)")
        group.add_argument("--jobs", type=positive, default=1,
                           help="strategies run at once, as separate processes (default 1)")
        group.add_argument("--shard", default=None, metavar="I/N",
                           help="run the I-th of N slices of the strategies (default: all of them)")

    return parse_script_args(config.tree(f"main_al.py --protocol {protocol.NAME}"),
                             "Pool-based deep active learning (main_al.py; --protocol deepal --help lists the "
                             "toolkit's flags)", argv, run_args, protocol.refuse)


def sweep(argv, args, cfg, protocol, names):
    """One run per strategy into <--out>/<Strategy>/ (utils/core/sweep.py): same settings and
    seeds, so the strategies of a trial share its initial labeled set and network."""
    strategies = protocol.sweep_strategies(names)
    out = args.out or default_out("sweep", cfg.PROTOCOL, cfg.DATASET)
    key = cfg.strategy_key
    jobs = []
    for name in Shard.parse(args.shard).take(strategies):
        folder = os.path.join(out, name)
        if finished(folder, cfg.TRIALS, cfg[protocol.CYCLES_KEY], {**cfg.identity(), key: name}):
            print(f"sweep: {name} has finished ({folder}); skipped", flush=True)
            continue
        resume = ["--resume"] if ResultsFolder(folder).has_state() else []
        others = strategy_settings_of_others(cfg, get_strategy(protocol.registry_name(name)))
        drop = {protocol.STRATEGY_FLAG: True, "--out": True, "--save_path": True, "--jobs": True, "--shard": True,
                "--resume": False, **dict.fromkeys(setting_flags(cfg, others), True), "--set": (key, *others)}
        jobs.append(Job(name, folder, child_argv(argv, drop, [protocol.STRATEGY_FLAG, name, "--out", folder, *resume])))
    run_jobs(jobs, args.jobs, os.path.abspath(__file__), main, lambda line: print(line, flush=True))


def strategy_settings_of_others(cfg, strategy) -> set:
    """The strategies' settings in ``cfg``'s tree that ``strategy`` does not read: a sweep's command may
    set them for its other strategies, and this strategy's run would refuse them."""
    owned = {key for name in list_strategies() for key in get_strategy(name).keys()}
    return (owned - set(strategy.keys())) & set(cfg)


def setting_flags(cfg, keys: set) -> list:
    """Every flag (synonyms included) that sets one of ``keys``."""
    return [flag for key in keys for spec in cfg.tree[key].flags for flag in spec.split("|")]


def own_images_oracle(cfg, args, data, dist):
    """The oracle of a run on own images (a person answers; utils/core/oracles.py), with a
    resumed run's answers read and checked before anything is written."""
    if args.answers and not (args.resume and args.out):
        raise UserError("--answers: answers are read when a run continues; give its --out and --resume")
    oracle = AnnotatorOracle(data.own, data, cfg.ORACLE, cfg.POLL_SECONDS, dist, args.answers)
    if args.resume and args.out and ResultsFolder(args.out).has_state():
        oracle.check_answers(args.out, ResultsFolder(args.out).read_state()["finished"].get("0"))
    return oracle


def main(argv=None):
    end_with_parent()  # a process of a --jobs sweep ends with the sweep
    argv = sys.argv[1:] if argv is None else list(argv)
    args, cfg = parse_args(argv)
    features.check_settings(cfg)
    protocol = PROTOCOLS[cfg.PROTOCOL](cfg, args)
    protocol.check_oracle()
    if protocol.side_task():  # --make-splits
        return
    names = strategy_list(cfg[cfg.strategy_key])
    if names is not None:
        if cfg.ORACLE != "simulated":
            raise UserError(f"--oracle {cfg.ORACLE}: a person answers the queries of one strategy; give one")
        return sweep(argv, args, cfg, protocol, names)
    if args.jobs != 1 or args.shard:
        raise UserError("--jobs and --shard apply to sweeps: give several strategies (A,B,C or all)")
    strategy = get_strategy(protocol.strategy_name(), protocol.SERVES, f"the {cfg.PROTOCOL} protocol")
    dist = distributed.setup(args.device, args.local_rank, args.amp, args.channels_last)
    data = protocol.load_data()
    if data.own is None:
        if args.answers:
            raise UserError("--answers: a person's answers to a query of own images (--dataset folder:PATH with "
                            "--oracle human)")
        data, oracle = open_set(data, cfg.KNOWN_CLASSES, cfg.KNOWN_CLASSES_RANDOM, cfg.SEED)
    else:
        oracle = own_images_oracle(cfg, args, data, dist)
    protocol.bind(data.to(dist.device), dist, strategy, oracle.labelable(data.train_idx))
    protocol.fit_inputs()
    protocol.use_features(features.feature_source(cfg, data, dist, args.data_root))  # (linear: new data)
    data, embeddings = protocol.data, features.query_embeddings(strategy, protocol.features, cfg)
    cycles = protocol.plan(len(data.train_idx))
    name_parts, label = protocol.names()
    derived = {**protocol.derived(), **({"classes": data.own.classes} if data.own else {})}
    run = start_run(args, cfg, data, dist, name_parts, label, cycles, [*oracle.columns, "stop_kappa"], derived)
    oracle.start(run.folder.path)
    protocol.pretrain(run)
    needs_previous = Need.PREVIOUS_MODEL in strategy.needs

    for trial in range(cfg.TRIALS):
        seed_everything(cfg.SEED + trial)
        state = protocol.start_trial(trial, oracle.labelable(data.train_idx))
        stop_idx = stop_set(oracle.unlabeled(data.train_idx, state.labeled_idx, state.discarded), cfg.SEED + trial)
        stop_previous = None  # the previous cycle's predictions on the stop set
        saved = run.restore(trial)
        if saved:
            state.restore(saved)
            stop_previous = saved.get("stop_predictions")

        for cycle in run.cycles_left(trial):
            times = {}
            state.take_answers(oracle, run.folder.path, cycle)  # a person's answers to the last query
            pool_idx = oracle.unlabeled(data.train_idx, state.labeled_idx, state.discarded)
            models = protocol.models(state, cycle)
            untrained = copy.deepcopy(models[0]) if needs_previous and state.previous is None else None  # cycle 0
            # own images with none labeled yet: nothing to train; the --init-strategy chooses the first query without a
            # model, as an initial set is chosen (utils.methods.features.initial_set)
            cold = len(state.labeled_idx) == 0
            query_strategy, query_embeddings = (protocol.init, protocol.features) if cold else (strategy, embeddings)
            hook = None
            with run.timer(times, "train_seconds"):
                if strategy.training and not cold:
                    hook = strategy.training(models[0], state.labeled_idx, pool_idx, protocol.stream,
                                             protocol.hook_settings())
                for m, member in enumerate(models if not cold else []):
                    protocol.train(member, state, pool_idx, hook if m == 0 else None, run,
                                   f"trial{trial}/cycle{cycle}" + (f"/member{m}" if len(models) > 1 else ""))
            model = models[0]
            acc = evaluate(model, data, cfg.TEST_BATCH, dist, data.workers) if len(data.test_idx) and not cold \
                else None
            stop_now = stop_predictions(model, data, stop_idx, cfg.TEST_BATCH, dist, data.workers)
            # stabilising predictions: agreement of this cycle's model with the previous one on the stop set
            kappa = "" if stop_previous is None else round(cohen_kappa(stop_previous.numpy(), stop_now.numpy()), 6)
            with run.timer(times, "query_seconds"):
                queried, ctx = np.empty(0, dtype=np.int64), None
                query_size = min(protocol.query_size(cycle, state), len(pool_idx))
                if oracle.waits and cycle == cycles - 1:
                    query_size = 0  # a person's answers to a last query would train nothing
                if query_size:
                    extras = {"state": state.strategy_state, **protocol.query_extras(models),
                              **(hook.extras() if hook else {})}
                    if needs_previous:  # the previous cycle's model (TOD); at cycle 0 an untrained one
                        extras["previous_model"] = untrained or state.previous_model(model)
                    ctx = QueryContext(None if cold else model, data, state.labeled_idx,
                                       query_strategy.candidates(pool_idx), query_size, dist, cfg.TEST_BATCH,
                                       data.workers, extras=extras, mc_samples=cfg.MC_SAMPLES, settings=cfg,
                                       cycle=cycle, embeddings=query_embeddings)
                    queried = query_strategy.select(ctx)
                answer = oracle.answer(queried, state.labeled_idx)
            scored = ctx is not None and not cold and oracle.waits and len(ctx.candidates) == len(pool_idx)
            probs = ctx.probs() if scored else None
            if probs is None and oracle.waits and cfg.TRAIN_MODE == "linear":  # (the oracle's data are the images)
                probs = predict(model, data, pool_idx, softmax_probs, cfg.TEST_BATCH, dist, data.workers)
            oracle.report(run.folder.path, cycle, model, pool_idx, queried, cfg.TEST_BATCH, data.workers, probs)
            state.record(answer)
            protocol.after_query(run, trial, cycle, model, state, pool_idx, queried)
            if cfg.SAVE_MODEL:
                run.save_model(trial, cycle, model)
            state.previous = model.state_dict()
            checkpoint = {**state.checkpoint(protocol.keeps_previous()), "stop_predictions": stop_now}
            state.labeled_idx = run.commit(trial, cycle, state.labeled_idx, answer.known, acc, times, checkpoint,
                                           {**answer.columns, "stop_kappa": kappa})
            stop_previous = stop_now
            if len(state.waiting):
                run.log(oracle.instructions(run.folder.path, cycle, len(state.waiting)))
                if oracle.stops:
                    break
    run.close()
    distributed.cleanup(dist)


if __name__ == "__main__":
    run_cli(main)
