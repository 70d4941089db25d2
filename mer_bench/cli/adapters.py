"""Model adapters: ``adapters`` (what is registered), ``check-adapter`` (the conformance suite),
``describe`` (parameter counts and state-dict table), and the subcommands adapter packages
register themselves (``mer_bench.commands``)."""

from __future__ import annotations

import argparse
from typing import Any

from mer_bench.adapters import available_adapters, get_adapter
from mer_bench.api import build_adapter
from mer_bench.cli._common import add_data_setting_args, data_setting, overrides
from mer_bench.commands import plugin_commands
from mer_bench.conformance import run_conformance
from mer_bench.runner import preset_name


def register(sub: Any) -> None:
    """Add ``adapters``, ``check-adapter``, ``describe`` and every plugin command."""
    p = sub.add_parser("adapters", help="registered model adapters and their source")
    p.set_defaults(handler=cmd_adapters)

    p = sub.add_parser(
        "check-adapter", help="conformance suite for an adapter (NAME or module:Class)"
    )
    p.add_argument("target")
    p.add_argument("--text-encoder", default=None)
    p.set_defaults(handler=cmd_check_adapter)

    p = sub.add_parser(
        "describe", help="parameter counts and state-dict table of a model for a setting"
    )
    p.add_argument("model")
    add_data_setting_args(p)
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.add_argument("--text-encoder", default=None)
    p.add_argument("--state-dict", action="store_true", help="print the non-BERT state dict as TSV")
    p.add_argument("--preset", default=None, help="preset name (default: the dataset's / default)")
    p.set_defaults(handler=cmd_describe)

    for command in plugin_commands():
        p = sub.add_parser(command.name, help=command.help, description=command.description)
        command.add_arguments(p)
        p.set_defaults(handler=command.handler)


def cmd_adapters(args: argparse.Namespace) -> int:
    for name, source in available_adapters().items():
        print(f"{name}\t{source}")
    return 0


def cmd_check_adapter(args: argparse.Namespace) -> int:
    return run_conformance(args.target, text_encoder=args.text_encoder)


def cmd_describe(args: argparse.Namespace) -> int:
    setting = data_setting(args)
    cls = get_adapter(args.model)
    preset = preset_name(cls, setting.dataset, args.preset)
    adapter = build_adapter(
        args.model,
        setting,
        params=overrides(args.set or [], None, [args.model])[args.model],
        preset=args.preset,
        text_encoder=args.text_encoder,
    )
    model = adapter.model
    bert_prefixes = tuple(
        getattr(adapter, "text_encoder_prefixes", ("text_model.", "text_encoder."))
    )
    state = model.state_dict()
    params_named = dict(model.named_parameters())
    # A module registered at several paths (shared weights) repeats in the state dict; every
    # path of a parameter is still a parameter, while the counts below stay de-duplicated.
    param_paths = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    non_bert = {k: v for k, v in state.items() if not k.startswith(bert_prefixes)}
    n_non_bert = sum(p.numel() for k, p in params_named.items() if not k.startswith(bert_prefixes))
    n_bert = sum(p.numel() for k, p in params_named.items() if k.startswith(bert_prefixes))
    if args.state_dict:
        print("name\tshape\tkind")
        for name, tensor in non_bert.items():
            shape = "x".join(str(s) for s in tensor.shape) or "1"
            print(f"{name}\t{shape}\t{'param' if name in param_paths else 'buffer'}")
        return 0
    print(f"model\t{cls.name}")
    print(f"setting\t{setting.id}")
    print(f"preset\t{preset}")
    print(f"non_bert_parameters\t{n_non_bert}")
    print(f"bert_parameters\t{n_bert}")
    print(f"non_bert_state_entries\t{len(non_bert)}")
    return 0
