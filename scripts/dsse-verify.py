#!/usr/bin/env python3
"""Verify a Phase Boot job receipt with securesystemslib's DSSE implementation (not ours).

usage: dsse-verify.py RECEIPT NODE_PUBLIC_KEY_HEX
Exit 0 and print the statement's predicateType if the envelope verifies with the key and its
payload is an in-toto Statement v1; exit 1 otherwise (the reason on stderr).
"""
import hashlib
import json
import sys

from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey


def main() -> int:
    path, public_hex = sys.argv[1], sys.argv[2]
    with open(path, "rb") as f:
        envelope = Envelope.from_dict(json.load(f))
    keyid = hashlib.sha256(bytes.fromhex(public_hex)).hexdigest()
    key = SSlibKey(keyid, "ed25519", "ed25519", {"public": public_hex})
    if envelope.payload_type != "application/vnd.in-toto+json":
        print(f"payloadType {envelope.payload_type!r}", file=sys.stderr)
        return 1
    try:
        envelope.verify([key], 1)
    except Exception as e:  # securesystemslib raises VerificationError and friends
        print(f"verify: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    statement = json.loads(envelope.payload)
    if statement.get("_type") != "https://in-toto.io/Statement/v1":
        print("not an in-toto Statement v1", file=sys.stderr)
        return 1
    print(statement["predicateType"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
