"""The ``dockyard`` commands that generate files from the code, and check them for drift:
``crds``, ``events``, ``reference`` and ``openapi`` (with its release check). Build-time
tooling, as the rest of ``dockyard.contract``: the running API never imports it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

EXIT_USAGE = 2  # wrong usage, as everywhere in the dockyard command


def _generated(
    args: argparse.Namespace,
    command: str,
    out: Path,
    matches: str,
    check: Callable[[Path], list[str]],
    write: Callable[[Path], Iterable[Path]],
) -> int:
    """Write the generated files under ``out``, or with --check name each drift."""
    if args.check:
        drift = check(out)
        for line in drift:
            print(f"drift: {line}", file=sys.stderr)
        if drift:
            print(f"run 'dockyard {command}' and commit the result", file=sys.stderr)
            return 1
        print(f"{out} matches {matches}")
        return 0
    for path in write(out):
        print(f"wrote {path}")
    return 0


def crds(args: argparse.Namespace) -> int:
    """``dockyard crds``: crds/ from the models."""
    from dockyard.core import crds as generated

    out = args.out or Path("crds")
    return _generated(args, "crds", out, "the models", generated.check_all, generated.write_all)


def events(args: argparse.Namespace) -> int:
    """``dockyard events``: specs/events/ from the event vocabulary."""
    from dockyard.core import events as generated

    out = args.out or Path("specs/events")
    return _generated(
        args,
        "events",
        out,
        "the event vocabulary",
        generated.check_schemas,
        generated.write_schemas,
    )


def reference(args: argparse.Namespace) -> int:
    """``dockyard reference``: docs/api-operations.md from the API's operations."""
    from dockyard.api import app
    from dockyard.contract import reference as generated

    out = args.out or generated.PATH
    operations = app.registry().operations
    return _generated(
        args,
        "reference",
        out,
        "the API's operations",
        lambda path: generated.check(path, operations),
        lambda path: generated.write(path, operations),
    )


def openapi(args: argparse.Namespace) -> int:
    """``dockyard openapi``: specs/openapi.yaml from the code; ``--check`` compares it
    with the code and the last release, ``--release`` releases it."""
    import yaml

    from dockyard.api import app, openapi
    from dockyard.contract import releases

    out = args.out or Path("specs/openapi.yaml")
    text = openapi.render_yaml(app.registry().operations)
    if args.check and args.release:
        print("dockyard openapi: use --check or --release, not both", file=sys.stderr)
        return EXIT_USAGE
    if args.check or args.release:
        current = out.read_text() if out.exists() else ""
        drifted = current != text
        if drifted:
            print(
                f"drift: {out} differs from the code; run 'dockyard openapi' and commit it",
                file=sys.stderr,
            )
        try:
            if args.release:
                # Only what is committed and matches the code can be released.
                if drifted:
                    return 1
                print(f"released {releases.release(text, args.released)}")
                return 0
            verdict = releases.judge(yaml.safe_load(text), args.released)
        except releases.ReleaseError as exc:
            print(f"dockyard openapi: {exc}", file=sys.stderr)
            return 1
        for line in releases.iter_lines(verdict):
            print(line, file=sys.stderr)
        if drifted or not verdict.passed:
            return 1
        print(f"{out} matches the code")
        if verdict.release is not None and not verdict.breaks:
            print(f"no breaking change against {verdict.release.path}")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")
    return 0
