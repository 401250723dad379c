"""Clean a folder of inputs for QA before a big build (no Ray): cleaned frame, mask and stats per frame.

    python preprocessing/clean_images.py --input data/hospital --output qa/hospital \
        [--config configs/build_example.yaml] [--set cleaning.mode=reference] [--sheet]

Every input kind the builder reads is accepted (images, video and DICOM cine frames at 3 fps,
volume slices), with the builder's safety rules (only regular files inside --input are opened).
Writes {output}/<input path>/<frame>.clean.png, .mask.png, .json and {output}/report.json (see
usfmae/shards/qa.py): every input read (frames) or rejected (reason), every skipped path (reason);
--sheet adds a contact sheet per input, {output}/sheets/<input path>.png (original | mask | cleaned).
Exit codes: 0 done (even with rejects), 2 bad arguments or config or no inputs.
"""

import argparse
import sys

from usfmae.config import ConfigError
from usfmae.shards.config import load_qa_config
from usfmae.shards.qa import clean_folder


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True, help="folder of inputs (searched recursively)")
    ap.add_argument("--output", required=True, help="QA output folder")
    ap.add_argument("--config", help=("YAML with `cleaning:` and `reader:` sections, a path or a packaged name "
                                      "(a build config works too)"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="dotted override, e.g. --set cleaning.text.enabled=false; repeatable")
    ap.add_argument("--sheet", action="store_true",
                    help="also write a contact sheet per input (original | mask | cleaned) to {output}/sheets/")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_qa_config(args.config, args.set)
        report = clean_folder(args.input, args.output, cfg, log=sys.stdout, sheets=args.sheet)
    except (ConfigError, NotADirectoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if report["inputs_seen"] == 0:
        print(f"error: no inputs under {args.input}", file=sys.stderr)
        return 2
    print(f"[clean] {report['frames']} frames from {report['inputs_seen']} inputs, {len(report['rejected'])} "
          f"rejected, {len(report['skipped'])} paths skipped -> {args.output}/report.json", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
