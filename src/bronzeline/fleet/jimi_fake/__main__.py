"""`python -m bronzeline.fleet.jimi_fake --port 8787 --devices 150`: serve the fake platform until SIGTERM,
printing its URL and the environment a bronzeline config reads its (fake) credentials from."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from bronzeline.fleet.jimi_fake.fleet import FakeSettings, password_md5
from bronzeline.fleet.jimi_fake.server import FakePlatform


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bronzeline.fleet.jimi_fake", description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8787, help="0 = a free port")
    ap.add_argument("--devices", type=int, default=150, help="devices per account")
    ap.add_argument("--targets", default="fireside", help="comma-separated accounts (the first logs in)")
    ap.add_argument("--password", default="fireside", help="the login account's password")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--max-imeis", type=int, default=50)
    ap.add_argument("--token-ttl", type=float, default=None, help="seconds a token lives (default: as asked)")
    ap.add_argument("--rate-limit-every", type=int, default=None, help="refuse the last of every N calls (1006)")
    ap.add_argument("--rate-limit-burst", type=int, default=1)
    ap.add_argument("--rate-limit-per-second", type=float, default=None)
    ap.add_argument("--late-share", type=float, default=0.2)
    ap.add_argument("--malformed-share", type=float, default=0.0)
    ap.add_argument("--mileage-unit", choices=("m", "km"), default="m")
    args = ap.parse_args(argv)
    targets = tuple(t for t in args.targets.split(",") if t)
    settings = FakeSettings(
        accounts={targets[0]: password_md5(args.password)}, targets=targets, devices_per_account=args.devices,
        seed=args.seed, host=args.host, port=args.port, max_imeis=args.max_imeis, token_ttl_seconds=args.token_ttl,
        rate_limit_every=args.rate_limit_every, rate_limit_burst=args.rate_limit_burst,
        rate_limit_per_second=args.rate_limit_per_second, late_share=args.late_share,
        malformed_share=args.malformed_share, mileage_unit=args.mileage_unit)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with FakePlatform(settings) as fake:
        print(f"fake Tracksolid platform at {fake.url} ({len(fake.devices)} devices)", flush=True)
        for name, value in fake.env().items():
            print(f"export {name}={value}", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
