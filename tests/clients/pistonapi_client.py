"""The PyPI `pistonapi` package, unmodified, against a running Kiln: python3 pistonapi_client.py URL

It posts form-encoded bodies (files=<code>, repeated args), which Kiln accepts as Piston does.
Prints one JSON line per call for the Rust test to check."""
import json
import sys

from pistonapi import PistonAPI, PistonError

api = PistonAPI(endpoint=sys.argv[1] + "/api/v2")
print(json.dumps({"what": "languages", "v": sorted(api.languages)}))
print(json.dumps({"what": "python", "v": api.execute("python", "3.11.2", "print('hi from pistonapi')")}))
print(json.dumps({"what": "args", "v": api.execute("py", "3.x", "import sys; print(sys.argv[1:])", args=["a", "b"])}))
try:
    api.execute("cobol", "1.0", "x")
    print(json.dumps({"what": "unknown", "v": None}))
except PistonError as e:
    print(json.dumps({"what": "unknown", "v": str(e)}))
