"""persam app: the whole flow (reference from clicks, learn, find, video) as a local web page."""
from __future__ import annotations

import argparse

from .common import add_model_args

HELP = "open a web page to click your object, learn it and find it in photos and videos"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "app", help=HELP,
        description=HELP + ". Needs the optional extra: pip install \"persam[app]\". The page listens on "
                    "127.0.0.1 (this computer only), never makes a public link, and reads only files "
                    "uploaded to it.")
    add_model_args(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1; anything else warns, as other "
                             "machines could then use the page)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    parser.add_argument("--max-upload-mb", type=float, default=50, metavar="MB",
                        help="largest file the page accepts, in MB (default: 50)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401  (only to give a clear message when it is missing)
    except ImportError:
        raise ImportError('the web page needs Gradio: pip install "persam[app]"') from None
    from persam.app import launch, load_persam

    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be between 1 and 65535, got {args.port}")
    persam = load_persam(args.checkpoint, args.model, args.device, args.fit_steps)
    launch(persam, host=args.host, port=args.port, max_upload_mb=args.max_upload_mb,
           default_method=args.method)
    return 0
