"""`usfmae doctor`: check the environment before a multi-day run, and say how to fix what is wrong.

    usfmae doctor [--output runs/] [--s3 s3://bucket/prefix] [--endpoint-url URL]

One row per check (usfmae/doctor.py): name, status (OK, WARN, SKIP, FAIL), what was found, and the fix.
Exit code 1 when any check FAILs. Nothing is compiled, downloaded or started: DeepSpeed ops are only probed
for compatibility, S3 gets one HEAD and one list call with short timeouts.
"""

import argparse
import os
import sys
from pathlib import Path

from usfmae.doctor import FAIL, format_table, run_checks


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="usfmae doctor", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", default=".", help="where runs and shards will be written (free-disk check)")
    ap.add_argument("--s3", default=os.environ.get("USFMAE_S3_URL"), help="s3://bucket/prefix to check")
    ap.add_argument("--endpoint-url", help="S3-compatible endpoint (default $USFMAE_S3_ENDPOINT_URL, else AWS)")
    args = ap.parse_args(argv)
    checks = run_checks(Path(args.output), args.s3, args.endpoint_url)
    print(format_table(checks))
    failed = [c.name for c in checks if c.status == FAIL]
    print(f"\n{len(failed)} check(s) failed: {', '.join(failed)}" if failed else "\nno failures")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
