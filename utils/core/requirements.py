"""Exit 0 when every requirement in the given files is installed (pinned versions matched),
1 otherwise, listing what is missing. Used by run.sh and tests/run.sh before installing.

    python -m utils.core.requirements requirements.txt [more.txt ...]
"""

import sys
from importlib.metadata import PackageNotFoundError, version


def unmet(paths):
    problems = []
    for path in paths:
        with open(path) as fh:
            for line in fh:
                requirement = line.split("#")[0].strip()
                if not requirement:
                    continue
                name, _, pinned = (part.strip() for part in requirement.partition("=="))
                try:
                    installed = version(name)
                except PackageNotFoundError:
                    problems.append(f"{name} (not installed)")
                    continue
                if pinned and installed.split("+")[0] != pinned:  # 2.14.1+cu130 is 2.14.1
                    problems.append(f"{name}=={pinned} (found {installed})")
    return problems


if __name__ == "__main__":
    missing = unmet(sys.argv[1:])
    if missing:
        print("missing requirements: " + ", ".join(missing))
    sys.exit(1 if missing else 0)
