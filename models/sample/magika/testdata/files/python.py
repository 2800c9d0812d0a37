#!/usr/bin/env python3
"""A small command-line tool that counts words in files."""

import argparse
import collections
import sys
from pathlib import Path


def count_words(path: Path) -> collections.Counter:
    counter = collections.Counter()
    with path.open("r", encoding="utf-8") as f:
        for line in f:
            counter.update(word.lower() for word in line.split())
    return counter


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    total = collections.Counter()
    for p in args.paths:
        total += count_words(p)
    for word, n in total.most_common(args.top):
        print(f"{n:8d} {word}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
