"""`vae-client` / `python -m vae_client`: call the service from the command line.

    vae-client sample --count 64 --seed 7 --out grid.png
    vae-client encode digit.png
    vae-client reconstruct digit.png --out recon.png
    vae-client decode 0.5 -1.0 --out decoded.png
    vae-client interpolate a.png b.png --steps 10 --out morph.png
    vae-client variations digit.png --count 16 --temperature 0.5 --out grid.png
    vae-client score *.png
    vae-client info
"""

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import numpy as np

from vae_client._channel import add_connection_arguments, credentials_from_arguments
from vae_client._client import VAEClient
from vae_client._images import PillowMissing, read_digit, require_pillow, save_grid

_INTERPOLATE_HELP = """\
Decode evenly spaced points on a path between two endpoints, both included.

Each endpoint is an image file, or a latent point written as numbers separated
by commas, like 0.5,-1.0. A point that starts with a minus sign goes after --,
which ends the options:

  vae-client interpolate --steps 10 --out morph.png -- -1.5,0.3 digit.png
"""


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
        _add_image_arguments(command)
        command.add_argument("--seed", type=int, help="also draw latents with this seed")
    commands.choices["reconstruct"].add_argument(
        "--out", type=Path, help="save the reconstructions as one PNG grid"
    )

    decode = commands.add_parser("decode", help="decode latent points into digits")
    decode.add_argument(
        "latents", type=float, nargs="+", help="latent points, one after the other: z1 z2 ..."
    )
    decode.add_argument("--out", type=Path, help="save the digits as one PNG grid")

    interpolate = commands.add_parser(
        "interpolate",
        help="decode points on a path between two images or latent points",
        description=_INTERPOLATE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for end in ("start", "end"):
        interpolate.add_argument(
            end, type=_endpoint, help="image file, or latent point like 0.5,-1.0"
        )
    interpolate.add_argument("--steps", type=int, default=10, help="points, both ends included")
    interpolate.add_argument(
        "--path", choices=("spherical", "linear"), default="spherical",
        help="spherical keeps to the prior's shell (default); linear is the straight line",
    )
    interpolate.add_argument(
        "--invert", action="store_true", help="image endpoints: dark strokes on a light ground"
    )
    interpolate.add_argument("--out", type=Path, help="save the digits as a one-row PNG strip")

    variations = commands.add_parser("variations", help="digits like each image")
    _add_image_arguments(variations)
    variations.add_argument("--count", type=int, default=16, help="variations per image")
    variations.add_argument(
        "--temperature", type=float, help="scales the posterior's spread; 0 is its mean"
    )
    variations.add_argument("--seed", type=int)
    variations.add_argument(
        "--out", type=Path, help="save a PNG grid: one row per image, --count columns"
    )

    score = commands.add_parser(
        "score",
        help="ELBO and log-likelihood bound of each image, in nats, one JSON line per file",
        description="Each file is scored in a call of its own, so its scores do not depend "
        "on the other files given.",
    )
    _add_image_arguments(score)
    score.add_argument(
        "--samples", type=int, default=64, help="posterior draws per image (more: tighter)"
    )
    score.add_argument("--seed", type=int)

    commands.add_parser("info", help="describe the model being served")
    return parser


def _add_image_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("images", type=Path, nargs="+", help="image files (PNG, ...)")
    command.add_argument("--invert", action="store_true", help="dark strokes on a light ground")


def _endpoint(text: str) -> Path | np.ndarray:
    """An interpolation endpoint: a latent point if `text` is numbers separated by commas,
    else an image file."""
    try:
        return np.array([float(number) for number in text.split(",")], dtype=np.float32)
    except ValueError:
        return Path(text)


def _read_images(paths: Sequence[Path], invert: bool) -> np.ndarray:
    """(N, 28, 28) uint8 digits from image files."""
    return np.stack([read_digit(path, invert) for path in paths])


def _saved(images: np.ndarray, out: Path | None, columns: int | None = None) -> str | None:
    """Save (N, 28, 28) images as one PNG grid if `out` is given; returns what to report."""
    if out is None:
        return None
    save_grid(images, out, columns)
    return str(out)


# Images come only to be saved as PNG: the server's uint8 are the very pixels save_grid would
# make of its float32 ones, in a quarter of the bytes.
_PIXELS = "uint8"


def _run(args: argparse.Namespace, client: VAEClient) -> dict[str, object]:
    """Make the call; returns what to print as JSON."""
    if args.command == "sample":
        samples = client.sample(
            args.count, seed=args.seed, temperature=args.temperature, output_dtype=_PIXELS
        )
        return {"model_version": samples.model_version, "count": len(samples.images),
                "out": _saved(samples.images, args.out)}
    if args.command in ("encode", "reconstruct"):
        images = _read_images(args.images, args.invert)
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
        return {
            "model_version": result.model_version,
            "images": [
                {"file": file, "reconstruction_error_nats": float(error)}
                for file, error in zip(files, result.errors, strict=True)
            ],
            "out": _saved(result.images, args.out),
        }
    if args.command == "decode":
        latent_dim = client.info().latent_dim
        if len(args.latents) % latent_dim:
            raise SystemExit(f"vae-client decode: give points of {latent_dim} numbers each")
        latents = np.array(args.latents, dtype=np.float32).reshape(-1, latent_dim)
        decoded = client.decode(latents, output_dtype=_PIXELS)
        return {"count": len(decoded), "out": _saved(decoded, args.out)}
    if args.command == "interpolate":
        start, end = (
            read_digit(point, args.invert) if isinstance(point, Path) else point
            for point in (args.start, args.end)
        )
        morph = client.interpolate(
            start, end, args.steps, path=args.path, output_dtype=_PIXELS
        )
        return {"model_version": morph.model_version, "latents": morph.latents.tolist(),
                "out": _saved(morph.images, args.out, columns=len(morph.images))}
    if args.command == "variations":
        variations = client.variations(
            _read_images(args.images, args.invert), args.count,
            temperature=args.temperature, seed=args.seed, output_dtype=_PIXELS,
        )
        return {
            "model_version": variations.model_version,
            "images": [
                {"file": str(path), "latents": latents.tolist()}
                for path, latents in zip(args.images, variations.latents, strict=True)
            ],
            "out": _saved(
                variations.images.reshape(-1, *variations.images.shape[2:]), args.out,
                columns=args.count,
            ),
        }
    info = client.info()
    return {key: getattr(info, key) for key in info.__dataclass_fields__}


def _score(args: argparse.Namespace, client: VAEClient) -> Iterator[dict[str, object]]:
    """Score each file in a call of its own; yields one result per file, as it comes."""
    for path, digit in zip(args.images, _read_images(args.images, args.invert), strict=True):
        scores = client.score(digit[None], args.samples, seed=args.seed)
        yield {"file": str(path), "elbo": float(scores.elbo[0]),
               "log_likelihood": float(scores.log_likelihood[0]),
               "model_version": scores.model_version}


def _needs_pillow(args: argparse.Namespace) -> bool:
    """Whether the command reads or saves an image file."""
    endpoints = (getattr(args, "start", None), getattr(args, "end", None))
    return bool(getattr(args, "images", None) or getattr(args, "out", None)) or any(
        isinstance(point, Path) for point in endpoints
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; prints its result as JSON (`score`: one line per file). Exit 1 with
    one line on stderr on an RPC error, or when PNG files are to be read or saved without
    Pillow."""
    args = _parser().parse_args(argv)
    if _needs_pillow(args):
        # Before the call, not after it has been made for nothing.
        try:
            require_pillow()
        except PillowMissing as error:
            print(f"vae-client: {error}", file=sys.stderr)
            return 1
    client = VAEClient(
        args.target, credentials=credentials_from_arguments(args), server_name=args.server_name,
        connections=args.connections, timeout_seconds=args.timeout,
    )
    with client:
        try:
            if args.command == "score":
                for row in _score(args, client):
                    print(json.dumps(row), flush=True)
            else:
                print(json.dumps(_run(args, client), indent=2))
        except grpc.RpcError as error:
            print(f"vae-client: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
