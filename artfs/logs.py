"""Logging set-up for the command line and daemons (libraries only call getLogger), and the one
place that keeps secrets out of what artfs prints.

`-v` shows artfs's own INFO lines (each retry of a store request, among others), `-vv` its DEBUG
lines; the SDKs (botocore, urllib3, google) stay at WARNING unless `-vvv`, since their debug
output is a flood of hook and header dumps. Every line, ours or theirs, goes through `redact`.
"""

from __future__ import annotations

import logging
import os
import re

THIRD_PARTY = ("botocore", "boto3", "urllib3", "s3transfer", "google", "requests")
FORMAT = "%(asctime)s artfs: %(levelname)s %(name)s: %(message)s"

# A URL's query (presigned URLs carry the access key id and the signature there), and headers or
# parameters that carry credentials wherever they appear.
_QUERY = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s\"'?]*)\?[^\s\"']*", re.IGNORECASE)
_SECRETS = re.compile(
    r"(x-amz-security-token|x-amz-signature|x-amz-credential|awsaccesskeyid|signature|credential"
    r"|aws_secret_access_key|aws_session_token|access_token|private_key)(\"?\s*[:=]\s*\"?)[^\s\"',&}]+",
    re.IGNORECASE,
)
_AUTHORIZATION = re.compile(r"(authorization\"?\s*[:=]\s*)[^\n]+", re.IGNORECASE)  # the whole header


def redact(text: str) -> str:
    """`text` without URL queries or credential values (for errors and log lines)."""
    text = _AUTHORIZATION.sub(r"\1<redacted>", _QUERY.sub(r"\1?<redacted>", text))
    return _SECRETS.sub(r"\1\2<redacted>", text)


class _Redacting(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


def setup(verbosity: int = 0) -> None:
    """Log to stderr: artfs at WARNING, INFO (-v) or DEBUG (-vv, or $ARTFS_LOG=LEVEL); the SDKs
    at WARNING, or DEBUG too with -vvv."""
    level = os.environ.get("ARTFS_LOG") or ("DEBUG" if verbosity > 1 else "INFO" if verbosity else "WARNING")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    handler.addFilter(_Redacting())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.DEBUG if verbosity > 2 else logging.WARNING)
