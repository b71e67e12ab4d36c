"""The latest patch of every MLflow minor strictly between two releases, from the package
index (so a new patch release is tested as soon as it is out): one version per line."""

import re
import subprocess
import sys


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def main(oldest: str, newest: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", "mlflow"],
        check=True, capture_output=True, text=True,
    ).stdout
    listed = re.search(r"^Available versions: (.*)$", out, re.M).group(1).split(", ")
    released = [v for v in listed if re.fullmatch(r"\d+\.\d+\.\d+", v)]
    latest: dict[tuple[int, int], str] = {}
    for version in released:
        minor = _key(version)[:2]
        if _key(oldest)[:2] < minor < _key(newest)[:2]:
            if minor not in latest or _key(version) > _key(latest[minor]):
                latest[minor] = version
    print("\n".join(latest[m] for m in sorted(latest)))


if __name__ == "__main__":
    main(*sys.argv[1:])
