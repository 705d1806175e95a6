// The npm `piston-client` package, unmodified, against a running Kiln: node piston-client.mjs URL
// Prints one JSON line per call for the Rust test to check.
import piston from "piston-client";

const client = piston({ server: process.argv[2] });
const out = (what, v) => console.log(JSON.stringify({ what, v }));

out("runtimes", await client.runtimes());
out("python", await client.execute("python", "import sys\nprint('hi', sys.argv[1:], input())", { stdin: "kiln\n" }));
out("c", await client.execute("c", "#include <stdio.h>\nint main(void) { puts(\"hi from c\"); return 3; }"));
out("c-broken", await client.execute({ language: "c", files: [{ name: "x.c", content: "int main(void) { return nope; }" }] }));
out("timeout", await client.execute("bash", "sleep 10", { runTimeout: 500 }));
out("too-long", await client.execute("python", "print(1)", { runTimeout: 10000000 }));
out("unknown", await client.execute("cobol", "DISPLAY 'X'", { version: "1.0.0" }));
