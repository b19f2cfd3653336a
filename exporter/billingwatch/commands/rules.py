"""`billingwatch rules`: render the Prometheus rules from the alerting config."""

import argparse
import sys
from pathlib import Path

from billingwatch.rules.config import load_config
from billingwatch.rules.render import render_rules


def add_rules(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = sub.add_parser("rules", help="render the Prometheus alerting and recording rules")
    parser.add_argument("--config", help="YAML file of thresholds laid over the defaults (see rules/config.yml)")
    parser.add_argument("-o", "--output", help="write the rules to this file (default: standard output)")
    parser.add_argument(
        "--print-defaults",
        action="store_true",
        help="print the commented default config, generated from the alert modules (rules/config.yml), and exit",
    )
    parser.set_defaults(run=rules)


def rules(args: argparse.Namespace) -> int:
    if args.print_defaults:
        from billingwatch.rules.config import default_config_text

        sys.stdout.write(default_config_text())
        return 0
    text = render_rules(load_config(args.config))
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0
