"""Command line: ``aoai-emulator`` / ``python -m airflow_provider_aoai.emulator``.

Prints ``AOAI emulator listening on http://HOST:PORT`` once the socket listens, serves until SIGINT or
SIGTERM, then exits 0.
"""

from __future__ import annotations

import argparse
import sys

from airflow_provider_aoai.emulator import Emulator


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
    parser.add_argument("--upload-expiry-seconds", type=float, default=None, help="Upload lifetime (2 h)")
    parser.add_argument("--max-file-bytes", type=int, default=None, help="POST /files limit (512 MiB)")
    parser.add_argument("--max-upload-bytes", type=int, default=None, help="Upload limit (9 GiB)")
    parser.add_argument("--max-part-bytes", type=int, default=None, help="part limit (512 MiB)")
    parser.add_argument("--tls", action="store_true", help="serve https with a self-signed certificate")
    parser.add_argument("--log-level", default="warning", help="uvicorn log level (default: warning)")
    return parser.parse_args(argv)


# What the emulator runs on: Airflow 3 ships these; on Airflow 2.11 the [emulator] extra brings them.
SERVER_MODULES = ("starlette", "uvicorn", "python_multipart")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import importlib

    try:
        for module in SERVER_MODULES:
            importlib.import_module(module)
    except ModuleNotFoundError as exc:
        print(
            f"aoai-emulator needs {exc.name}, which is not installed: "
            "pip install 'airflow-provider-aoai[emulator]'",
            file=sys.stderr,
        )
        return 2
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
