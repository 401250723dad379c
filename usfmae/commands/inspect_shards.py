"""`usfmae inspect`: samples per dataset and per shard of a build, checked against its manifest, and a
contact sheet of random samples (usfmae/inspect_shards.py).

    usfmae inspect shards/my_build [--sheet contact.png] [--samples 16] [--seed 0]
    usfmae inspect s3://bucket/shards/openus46 --endpoint-url http://minio:9000

Every tar is read (streamed, one sample at a time); each sample's dataset comes from its .json metadata.
Counts that disagree with manifest.json are reported as problems (exit code 1).
"""

import argparse
import json
import sys
from pathlib import Path

from usfmae.inspect_shards import contact_sheet, format_report, inspect_shards


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="usfmae inspect", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("shards", help="build directory, manifest.json, tar glob, or s3://bucket/prefix")
    ap.add_argument("--sheet", default="contact_sheet.png", help="contact-sheet PNG to write ('' for none)")
    ap.add_argument("--samples", type=int, default=16, help="random samples on the contact sheet")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random pick")
    ap.add_argument("--endpoint-url", help="S3-compatible endpoint (default $USFMAE_S3_ENDPOINT_URL, else AWS)")
    ap.add_argument("--json", dest="json_out", help="also write the counts as JSON here")
    args = ap.parse_args(argv)
    try:
        ins = inspect_shards(args.shards, args.samples if args.sheet else 0, args.seed, args.endpoint_url)
        print(format_report(ins))
        if args.sheet:
            print(f"\ncontact sheet ({len(ins.picks)} random samples): {contact_sheet(ins.picks, args.sheet)}")
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(
            {"source": ins.source, "total": ins.total, "datasets": ins.datasets, "problems": ins.problems,
             "shards": [vars(s) for s in ins.shards]}, indent=2))
    return 1 if ins.problems else 0


if __name__ == "__main__":
    sys.exit(main())
