"""The PyPI `judge0` package (the official Judge0 Python SDK), unmodified, against a running
Kiln: python3 judge0_client.py URL. It reads /languages and /config_info, creates submissions
with base64 and wait=false, polls them with fields=*, and batches test cases.
Prints one JSON line per call for the Rust test to check."""
import json
import sys

import judge0

client = judge0.Client(sys.argv[1])


def out(what, s):
    print(json.dumps({"what": what, "v": {
        "stdout": s.stdout, "stderr": s.stderr, "compile_output": s.compile_output,
        "status": int(s.status), "time": s.time, "memory": s.memory, "token": s.token}}))


# Input goes in as a test case: the SDK treats a `stdin=` keyword as already base64-encoded.
out("python", judge0.run(client=client, source_code="print(input()[::-1])", language=judge0.PYTHON,
                         test_cases=judge0.TestCase(input="kiln", expected_output="nlik")))
out("cpp", judge0.run(client=client, source_code="#include <iostream>\nint main() { std::cout << 6 * 7 << std::endl; }", language=judge0.CPP))
out("c-error", judge0.run(client=client, source_code="int main(void) { return nope; }", language=judge0.C))
out("js-exit", judge0.run(client=client, source_code="process.exit(3)", language=judge0.JAVASCRIPT))
cases = judge0.run(client=client, source_code="echo $(( $(cat) * 2 ))", language=judge0.BASH,
                   test_cases=[("2", "4"), ("5", "10\n"), ("7", "15")])
for i, s in enumerate(cases):
    out(f"case{i}", s)
