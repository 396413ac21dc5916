"""Command line: ``aoai-emulator`` / ``python -m airflow_provider_aoai.emulator``.

Prints ``AOAI emulator listening on http://HOST:PORT`` once the socket listens, serves until SIGINT or
SIGTERM, then exits 0. Without the emulator's stack (the ``[emulator]`` extra on Airflow 2.11) it prints one
line saying what to install and exits 2.
"""

from __future__ import annotations

import argparse
import sys

from airflow_provider_aoai.emulator import Emulator, require_emulator_extra
from airflow_provider_aoai.emulator.quotas import Quotas
from airflow_provider_aoai.emulator.throttle import Throttle, check_rate

EXIT_MISSING_EXTRA = 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="aoai-emulator", description="Local emulator of the Azure OpenAI / Foundry Files service."
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one (default: 0)")
    parser.add_argument("--api-key", default=None, help="api key clients must send (default: accept any)")
    parser.add_argument(
        "--data-dir", default=None, help="keep files here across restarts (default: temp dir)"
    )
    parser.add_argument(
        "--processing-seconds", type=float, default=1.0, help="time a file takes to reach its final status"
    )
    parser.add_argument("--upload-expiry-seconds", type=float, default=None, help="Upload lifetime (1 h)")
    parser.add_argument("--max-file-bytes", type=int, default=None, help="POST /files limit (512 MiB)")
    parser.add_argument("--max-upload-bytes", type=int, default=None, help="Upload limit (9 GiB)")
    parser.add_argument("--max-part-bytes", type=int, default=None, help="part limit (512 MiB)")
    defaults = Quotas()
    for name, what in (
        ("fine_tune_files", "fine-tune files per resource"),
        ("fine_tune_bytes", "bytes of fine-tune files per resource"),
        ("batch_files", "batch input files without an expiration"),
        ("batch_files_expiring", "batch input files with an expiration"),
    ):
        flag = "--max-" + name.replace("_", "-")
        parser.add_argument(
            flag, type=int, default=getattr(defaults, name), help=f"quota: {what} (%(default)s)"
        )
    rates = Throttle()
    for name, what in (
        ("creates", "creates (file uploads, imports, uploads, completes); the documented 30/s"),
        ("parts", "upload parts; the documented 30/s of file upload requests"),
        ("reads", "every other operation; no documented figure, so no limit"),
    ):
        parser.add_argument(
            f"--max-{name}-per-second",
            type=_rate,
            default=getattr(rates, name),
            metavar="RATE",
            help=f"rate limit per resource: {what}; 0 = no limit (%(default)s)",
        )
    parser.add_argument("--tls", action="store_true", help="serve https with a self-signed certificate")
    parser.add_argument("--log-level", default="warning", help="uvicorn log level (default: warning)")
    return parser.parse_args(argv)


def _rate(text: str) -> float:
    try:
        return check_rate("a rate", float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        require_emulator_extra()
    except ImportError as exc:
        print(f"aoai-emulator: {exc}", file=sys.stderr, flush=True)
        return EXIT_MISSING_EXTRA
    emulator = Emulator(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        data_dir=args.data_dir,
        processing_seconds=args.processing_seconds,
        upload_expiry_seconds=args.upload_expiry_seconds,
        max_file_bytes=args.max_file_bytes,
        max_upload_bytes=args.max_upload_bytes,
        max_part_bytes=args.max_part_bytes,
        quotas=Quotas(
            fine_tune_files=args.max_fine_tune_files,
            fine_tune_bytes=args.max_fine_tune_bytes,
            batch_files=args.max_batch_files,
            batch_files_expiring=args.max_batch_files_expiring,
        ),
        throttle=Throttle(
            creates=args.max_creates_per_second,
            parts=args.max_parts_per_second,
            reads=args.max_reads_per_second,
        ),
        tls=args.tls,
        log_level=args.log_level,
    )
    app = emulator.build_app()
    sock = emulator.bind()
    print(f"AOAI emulator listening on {emulator.url}", flush=True)
    print(
        f"managed identity: IDENTITY_ENDPOINT={emulator.identity_endpoint} "
        f"IDENTITY_HEADER={emulator.identity.header_secret}",
        file=sys.stderr,
        flush=True,
    )
    if emulator.tls:
        print(
            f"TLS certificate (trust it with REQUESTS_CA_BUNDLE): {emulator.ca_cert_path}",
            file=sys.stderr,
            flush=True,
        )
    try:
        # uvicorn handles SIGINT/SIGTERM in the main thread: it stops serving and returns.
        emulator.server(app).run(sockets=[sock])
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
