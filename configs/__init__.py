"""The named training configs.

A config may `extends` another; nested dicts merge key by key, except `dist`, which a child replaces
whole. `expert_N: {...}` overrides keys for expert N only. Every key is documented in
docs/config_keys.md and checked by neuro_trigger/config/; a key that no config of a chain sets
takes its default there (`base` below spells the defaults out). This file is data: it is read,
never executed by anything but Python's import of it.
"""

# The embedded default data set: the toy Monte Carlo, generated on first use (neuro_trigger/data/toy/).
TOY_DATA = {
    "train": ["data_cache/toy/neuroresults_random1.gz"],
    "val": ["data_cache/toy/neuroresults_random2.gz"],
    "test": ["data_cache/toy/neuroresults_random3.gz"],
}

configs = {
    "base": {
        "version": 1,
        "description": "Every default; other configs extend it.",
        "learning_rate": 1e-3,
        "batch_size": 2048,
        "drop_last": False,  # True: skip each epoch's last partial mini-batch
        "weight_decay": 1e-6,
        "in_size": 27,
        "out_size": 2,
        "workers": 5,
        "threads": None,  # None: the run's thread plan decides each expert's CPU threads (summary.json "plan")
        "epochs": 10,
        "model": "BaselineModel",
        "loss": "MSELoss",
        "optim": "Adam",
        "act": "relu",
        "experts": [0, 1, 2, 3, 4],
        "compare_to": None,
        "load_pre_trained_weights": None,
        "filter": "dataset_filters.IdentityFilter()",
        "dist": None,
        "seed": 42,
        "early_stopping_patience": 30,
        "monitor": "auto",
        "gradient_clip_val": None,
        "plot_every": 10,
        "stall_warn_s": 300,  # an expert silent this long is named on the console
        "stall_stop_s": 1800,  # ... and this long is stopped as failed (--resume retries it)
        "accelerator": "auto",
        "devices": 1,
        "precision": "32-true",
        "fixed_point": {  # the trigger hardware's arithmetic (neuro_trigger/fpga/)
            "precision": [12, 8, 8, 12, 10, 10],  # basf2's fractional bits; the last three: nodes, weights, table
            "weight_max": None,  # e.g. 63, as the original hardware trainer: weights clipped after each step
        },
        "slurm": {  # used by --launcher slurm only
            "partition": None,
            "time_min": 60,
            "cpus_per_expert": 2,
            "mem_gb": 4,
            "gpus_per_expert": 0,
            "account": None,
            "array_parallelism": 32,
            "extra": {},
            "side_time_min": 60,
            "side_mem_gb": 4,
        },
        "data": TOY_DATA,
    },
    "baseline_v1": {
        "extends": "base",
        "description": "The FPGA network: 27 -> 81 -> 2, relu.",
        "epochs": 10,
    },
    "baseline_v2": {
        "extends": "baseline_v1",
        "description": "Baseline with tanh(x/2), the activation the FPGA implements.",
        "act": "tanh/2",
        "epochs": 200,
    },
    "baseline_v2_tanh": {
        "extends": "baseline_v2",
        "description": "Baseline with plain tanh.",
        "act": "tanh",
    },
    "baseline_v2_softsign": {
        "extends": "baseline_v2",
        "description": "Baseline with softsign.",
        "act": "softsign",
    },
    "baseline_v2_batchnorm": {
        "extends": "baseline_v2",
        "description": "Baseline with batch norm after the hidden layer.",
        "model": "BaselineModelBN",
    },
    "baseline_v3": {
        "extends": "baseline_v2",
        "description": "Baseline with softsign (v3).",
        "act": "softsign",
    },
    "baseline_v4": {
        "extends": "baseline_v2",
        "description": "BaselineModelBN with tanh/2 (v4).",
        "model": "BaselineModelBN",
    },
    "simple_model_v1": {
        "extends": "baseline_v2",
        "description": "A deeper network, 27-50-100-50-10-out with batch norm.",
        "model": "SimpleModel",
        "act": "relu",
    },
    "baseline_v1_only_z": {
        "extends": "baseline_v1",
        "description": "Baseline predicting z only.",
        "out_size": 1,
    },
    "baseline_v2_tanh_per_expert": {
        "extends": "baseline_v2_tanh",
        "description": "Batch size and epochs per expert: small experts get small batches and more epochs.",
        "expert_0": {"batch_size": 2048, "epochs": 1000},
        "expert_1": {"batch_size": 2048, "epochs": 1000},
        "expert_2": {"batch_size": 16, "epochs": 4000},
        "expert_3": {"batch_size": 128, "epochs": 2000},
        "expert_4": {"batch_size": 16, "epochs": 4000},
    },
    "reweight_normal": {
        "extends": "baseline_v2",
        "description": "Batches drawn from z buckets weighted by a normal distribution.",
        "dist": {"n_buckets": 11, "inf_bounds": False, "norm": {"mean": 0.0, "std": 0.4}},
    },
    "reweight_normal_inf_bounds": {
        "extends": "reweight_normal",
        "description": "Normal reweighting, outer buckets extended to infinity.",
        "dist": {"n_buckets": 11, "inf_bounds": True, "norm": {"mean": 0.0, "std": 0.4}},
    },
    "reweight_uniform": {
        "extends": "reweight_normal",
        "description": "Batches drawn uniformly over z buckets.",
        "dist": {"n_buckets": 11, "inf_bounds": False, "uniform": {"lower": -1.0, "upper": 1.0}},
    },
    "filter_dupl_events": {
        "extends": "baseline_v2",
        "description": "Only the first row of each duplicated reco track in an event.",
        "filter": "dataset_filters.DuplicateEventsFilter()",
    },
    "filter_max2_events": {
        "extends": "baseline_v2",
        "description": "Only events with at most two distinct reco tracks.",
        "filter": "dataset_filters.Max2EventsFilter()",
    },
    "filter_combine_max2_dupl_events": {
        "extends": "baseline_v2",
        "description": "Events with at most two reco tracks, without duplicates.",
        "filter": "dataset_filters.ConCatFilter([dataset_filters.Max2EventsFilter(), "
        "dataset_filters.DuplicateEventsFilter()])",
    },
    "normal_distribution": {
        "extends": "reweight_normal",
        "description": "Normal reweighting (std 0.4); the VSCode 'Training' default.",
    },
    "unbiased_v1": {
        "extends": "baseline_v2",
        "description": "Least z bias found (issue 12, docs/physics.md): buckets drawn uniformly over z with the "
        "outermost +z bucket (82-100 cm) given 3.75x weight (uniform to +1.5, inf_bounds), L1 loss, batch 256; "
        "early stopping on the reweighted val loss. Costs about 2.5x the core resolution of baseline_v2.",
        "batch_size": 256,
        "epochs": 400,
        "loss": "L1Loss",
        "dist": {"n_buckets": 11, "inf_bounds": True, "uniform": {"lower": -1.0, "upper": 1.5}},
    },
}

# Sweeps: each searches a space of config keys for the best network of each expert, one Optuna study per expert
# (README: Sweeps; docs/sweeps.md). A list of values is a choice (a grid takes only these); a range is a tuple
# ("float" | "log" | "int" | "log_int", low, high). `expert_N.key` varies a key of expert N only.
sweeps = {
    "lr_batch_grid": {
        "config": "baseline_v2",
        "description": "Learning rate x batch size: every point of the 3 x 4 grid for each expert.",
        "space": {"learning_rate": [1e-3, 3e-3, 1e-2], "batch_size": [256, 512, 1024, 2048]},
    },
    "baseline_v2_tpe": {
        "config": "baseline_v2",
        "description": "TPE over learning rate, weight decay and activation; expert 4 (the fewest rows) also over "
        "its batch size.",
        "sampler": "tpe",
        "trials": 20,
        "space": {
            "learning_rate": ("log", 1e-4, 1e-2),
            "weight_decay": ("log", 1e-7, 1e-4),
            "act": ["tanh/2", "tanh"],
            "expert_4.batch_size": ("int", 16, 512),
        },
    },
}
