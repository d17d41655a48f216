"""What every ``razordav`` command shares, whichever module defines it (``cli.py``,
``service/admin_cli.py``): the options each command takes and the logging set-up. A
library module may import this; none imports ``cli.py``.
"""

from __future__ import annotations

import argparse
import logging

from . import config


def common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML config file (flags override it)")
    p.add_argument("--data-dir", help="metadata and cache directory (default ./razordav-data)")
    p.add_argument("--store", help="object store URL: file:///path or s3://bucket/prefix "
                                   "(default: a store inside the data dir)")
    p.add_argument("--s3-endpoint", help="S3 endpoint URL (default $AWS_ENDPOINT_URL)")
    p.add_argument("--cache-size", help="local block cache size, e.g. 10G")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    p.add_argument("-q", "--quiet", action="count", default=0, help="less log output")


def setup_logging(opts: config.Options, verbose: int, quiet: int) -> None:
    levels = ["debug", "info", "warning", "error"]
    idx = levels.index(opts.log_level.lower()) - verbose + quiet
    level = levels[max(0, min(idx, len(levels) - 1))].upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level != "DEBUG":
        for noisy in ("botocore", "boto3", "urllib3", "wsgidav", "sqlitedict", "s3transfer"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
