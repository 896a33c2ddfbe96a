"""`vae-client` / `python -m vae_client`: call the service from the command line.

    vae-client sample --count 64 --seed 7 --out grid.png
    vae-client encode digit.png
    vae-client reconstruct digit.png --out recon.png
    vae-client decode 0.5 -1.0 --out decoded.png
    vae-client info
"""

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
import numpy as np

from vae_client._channel import add_connection_arguments, channel_from_arguments
from vae_client._client import VAEClient
from vae_client._images import PillowMissing, read_digit, require_pillow, save_grid


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vae-client", description=__doc__.split("\n")[0])
    add_connection_arguments(parser)
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline per call, seconds")
    commands = parser.add_subparsers(dest="command", required=True)

    sample = commands.add_parser("sample", help="draw digits from the prior")
    sample.add_argument("--count", type=int, default=16)
    sample.add_argument("--seed", type=int)
    sample.add_argument("--temperature", type=float)
    sample.add_argument("--out", type=Path, help="save the digits as one PNG grid")

    for name, text in (("encode", "embed digit images"), ("reconstruct", "encode and decode")):
        command = commands.add_parser(name, help=text)
        command.add_argument("images", type=Path, nargs="+", help="image files (PNG, ...)")
        command.add_argument("--seed", type=int, help="also draw latents with this seed")
        command.add_argument(
            "--invert", action="store_true", help="dark strokes on a light ground"
        )
    commands.choices["reconstruct"].add_argument(
        "--out", type=Path, help="save the reconstructions as one PNG grid"
    )

    decode = commands.add_parser("decode", help="decode latent points into digits")
    decode.add_argument(
        "latents", type=float, nargs="+", help="latent points, one after the other: z1 z2 ..."
    )
    decode.add_argument("--out", type=Path, help="save the digits as one PNG grid")

    commands.add_parser("info", help="describe the model being served")
    return parser


# Images come only to be saved as PNG: the server's uint8 are the very pixels save_grid would
# make of its float32 ones, in a quarter of the bytes.
_PIXELS = "uint8"


def _run(args: argparse.Namespace, client: VAEClient) -> dict[str, object]:
    """Make the call; returns what to print as JSON."""
    if args.command == "sample":
        samples = client.sample(
            args.count, seed=args.seed, temperature=args.temperature, output_dtype=_PIXELS
        )
        if args.out:
            save_grid(samples.images, args.out)
        return {"model_version": samples.model_version, "count": len(samples.images),
                "out": str(args.out) if args.out else None}
    if args.command in ("encode", "reconstruct"):
        images = np.stack([read_digit(path, args.invert) for path in args.images])
        files = [str(path) for path in args.images]
        if args.command == "encode":
            encoding = client.encode(images, seed=args.seed)
            rows = [
                {"file": file, "mean": mean.tolist(), "log_variance": log_variance.tolist()}
                for file, mean, log_variance in zip(
                    files, encoding.mean, encoding.log_variance, strict=True
                )
            ]
            if encoding.latents is not None:
                for row, latents in zip(rows, encoding.latents, strict=True):
                    row["latents"] = latents.tolist()
            return {"model_version": encoding.model_version, "images": rows}
        result = client.reconstruct(images, seed=args.seed, output_dtype=_PIXELS)
        if args.out:
            save_grid(result.images, args.out)
        return {
            "model_version": result.model_version,
            "images": [
                {"file": file, "reconstruction_error_nats": float(error)}
                for file, error in zip(files, result.errors, strict=True)
            ],
            "out": str(args.out) if args.out else None,
        }
    if args.command == "decode":
        latent_dim = client.info().latent_dim
        if len(args.latents) % latent_dim:
            raise SystemExit(f"vae-client decode: give points of {latent_dim} numbers each")
        latents = np.array(args.latents, dtype=np.float32).reshape(-1, latent_dim)
        decoded = client.decode(latents, output_dtype=_PIXELS)
        if args.out:
            save_grid(decoded, args.out)
        return {"count": len(decoded), "out": str(args.out) if args.out else None}
    info = client.info()
    return {key: getattr(info, key) for key in info.__dataclass_fields__}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; prints its result as JSON. Exit 1 with one line on stderr on an RPC
    error, or when PNG files are to be read or saved without Pillow."""
    args = _parser().parse_args(argv)
    if args.command in ("encode", "reconstruct") or getattr(args, "out", None):
        # Before the call, not after it has been made for nothing.
        try:
            require_pillow()
        except PillowMissing as error:
            print(f"vae-client: {error}", file=sys.stderr)
            return 1
    with VAEClient(channel=channel_from_arguments(args), timeout_seconds=args.timeout) as client:
        try:
            result = _run(args, client)
        except grpc.RpcError as error:
            print(f"vae-client: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
