"""dt-report on real boards' DTBs from Debian's arm64 kernel package (fetched by
`make setup` into build/board-dtbs); facts checked by hand against dtc output."""
import json
import os

BOARD_FACTS = {}


def run(t, root, triple, dt_report, subset):
    base = os.path.join(root, "build", "board-dtbs")
    for rel, facts in BOARD_FACTS.items():
        name = "host::dt_report::" + os.path.basename(rel)
        path = os.path.join(base, rel)
        if not os.path.exists(path):
            t.skip(name, f"{path} missing")
            continue
        code, out, err = dt_report(root, triple, path)
        if code != 0:
            t.fail(name, f"dt-report exited {code}: {err.strip()[-300:]}")
            continue
        e = subset(facts, json.loads(out))
        if e:
            t.fail(name, e)
        else:
            t.ok(name)
