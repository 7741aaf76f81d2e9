"""``taler-ops generate``: fill an exchange database with traffic (bulk or live)."""

import argparse
import json

from .. import config
from ..sim import generator, inject
from ..crypto import crockford, keyring
from ..errors import ConfigError, UsageError
from .args import Subparsers


def keyring_for(cfg: config.TalerConfig, seed: int, rsa_bits: int = keyring.RSA_BITS,
                master: int | None = None) -> keyring.Keyring:
    """The generator's keys for ``seed``, signing for [exchange] CURRENCY and
    BASE_URL (defaults KUDOS and keyring.DEFAULT_BASE_URL).  If the configuration
    names a MASTER_PUBLIC_KEY, it must be the seed's (else the audit, reading the
    same configuration, would find every master signature forged)."""
    currency = cfg.get_string("exchange", "CURRENCY", required=False) or None
    base_url = cfg.get_string("exchange", "BASE_URL", required=False) or None
    try:
        keys = keyring.Keyring(seed, currency, base_url, rsa_bits=rsa_bits, master=master)
    except ValueError as exc:
        raise ConfigError(f"{cfg.describe()}: [exchange] CURRENCY: {exc}") from None
    configured = cfg.get_string("exchange", "MASTER_PUBLIC_KEY", required=False)
    if configured:
        try:
            same = crockford.decode(configured.strip(), 32) == keys.master_pub
        except ValueError as exc:
            raise ConfigError(f"{cfg.describe()}: [exchange] MASTER_PUBLIC_KEY: {exc}") from None
        if not same:
            raise ConfigError(
                f"{cfg.describe()}: [exchange] MASTER_PUBLIC_KEY is {configured}, but the "
                f"generator's master key for --master-seed "
                f"{seed if master is None else master} is {keys.master_public_key}: set that "
                "(or use the --master-seed whose key is configured)")
    return keys


def _handler(args: argparse.Namespace) -> int:
    if args.show_master_key:
        print(keyring.master_public_key(
            args.seed if args.master_seed is None else args.master_seed))
        return 0
    bulk_mode = args.rows is not None
    live_mode = args.rate is not None or args.duration is not None
    if bulk_mode == live_mode:
        raise UsageError("give either --rows N (bulk) or --rate R --duration S (live)")
    kinds = inject.parse_kinds(args.inject)
    if bulk_mode:
        if args.gc_every is not None:
            raise UsageError("--gc-every belongs to live mode (--rate/--duration)")
        generator.validate_bulk_args(args.rows, args.seed)
    else:
        if args.rate is None or args.duration is None:
            raise UsageError("live mode needs both --rate R and --duration S")
        generator.validate_live_args(args.rate, args.duration, args.gc_every)
    if args.rsa_bits < 1024 or args.rsa_bits % 16:
        raise UsageError(f"--rsa-bits must be a multiple of 16 of at least 1024, not {args.rsa_bits}")
    if args.auditor and not bulk_mode:
        raise UsageError("--auditor belongs to bulk mode (--rows)")
    cfg = config.load(args.config, project="taler-exchange")
    uri = config.exchangedb_uri(cfg)
    auditor_uri = config.auditordb_uri(cfg) if args.auditor else None
    keys = keyring_for(cfg, args.seed, args.rsa_bits, args.master_seed)
    progress = None if args.json else generator.tty_progress()
    try:
        if bulk_mode:
            inserted = generator.bulk(uri, args.rows, seed=args.seed, inject=kinds,
                                      record_path=args.record, now_us=args.now, progress=progress,
                                      keys=keys, auditor_uri=auditor_uri)
            summary = f"inserted {sum(inserted.values())} rows into {len(inserted)} tables"
            result: object = inserted
        else:
            stats = generator.live(uri, args.rate, args.duration, seed=args.seed,
                                   gc_every=args.gc_every, inject=kinds,
                                   record_path=args.record, progress=progress, keys=keys)
            summary = (f"inserted {sum(stats['inserted'].values())} rows "
                       f"({stats['rows_per_second']} rows/s) in {stats['transactions']} "
                       f"transactions; updated {sum(stats['updated'].values())} rows; "
                       f"GC deleted {sum(stats['deleted'].values())} rows")
            result = stats
    finally:
        if progress is not None:
            progress.done()
    print(json.dumps(result, indent=2, sort_keys=True) if args.json else summary)
    if kinds and not args.json:
        print(f"planted {len(kinds)} misbehaviour(s)"
              + (f", recorded in {args.record}" if args.record else ""))
    return 0


def add_parser(sub: Subparsers) -> None:
    kinds = ", ".join(f"{k} ({v})" for k, v in sorted(inject.KINDS.items()))
    p = sub.add_parser(
        "generate", help="generate exchange traffic: a bulk history or live business",
        description="Bulk (--rows): write a consistent exchange history touching every "
                    "replicated table, with binary COPY. Live (--rate, --duration): act as "
                    "the exchange at R rows/s, updating balances and GC-ing on request.")
    p.add_argument("-c", "--config", metavar="FILE",
                   help="configuration with [exchangedb-postgres] CONFIG (default: Taler's "
                        "taler-exchange.conf search; it acts as the exchange)")
    p.add_argument("--rows", type=int, metavar="N", help="bulk: about N rows of history")
    p.add_argument("--rate", type=float, metavar="R", help="live: rows per second")
    p.add_argument("--duration", type=float, metavar="S", help="live: seconds to run")
    p.add_argument("--gc-every", type=float, metavar="SECONDS",
                   help="live: run the exchange's garbage collection this often (primary only)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--master-seed", type=int, metavar="N",
                   help="derive the exchange's offline master key (and its denomination keys) "
                        "from N instead of --seed: runs with different seeds on one exchange "
                        "then sign as the same exchange, under one MASTER_PUBLIC_KEY")
    p.add_argument("--now", type=int, metavar="MICROSECONDS",
                   help="bulk: the history ends at this time (default: now); with --seed "
                        "it makes the output reproducible")
    p.add_argument("--inject", metavar="KIND[,KIND...]", action="append",
                   help=f"plant exchange misbehaviour an audit must find: {kinds}")
    p.add_argument("--record", metavar="FILE",
                   help="write what was planted as a JSON list of {kind, table, serial, ...}")
    p.add_argument("--auditor", action="store_true",
                   help="bulk: also write merchants' deposit confirmations (every eighth batch "
                        "deposit; --inject deposit_confirmation_unknown) into the auditor "
                        "database ([auditordb-postgres] CONFIG)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--rsa-bits", type=int, default=keyring.RSA_BITS, metavar="BITS",
                   help=f"size of new RSA denomination keys (default {keyring.RSA_BITS}, as "
                        "Taler's test configurations; 2048 makes coins about 3x slower)")
    p.add_argument("--show-master-key", action="store_true",
                   help="print the master public key of --master-seed or --seed (what [exchange] "
                        "MASTER_PUBLIC_KEY must say for the audit to check signatures) and exit")
    p.set_defaults(handler=_handler)
