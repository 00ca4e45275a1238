"""``python -m app``: see ``app.cli``; without the project's dependencies, say how to run it instead of a traceback."""
import sys

try:
    from .cli import main
except ModuleNotFoundError as exc:
    sys.exit(
        f"python -m app: {exc.name} is not installed for {sys.executable}.\n"
        "Run it with the project's virtual environment: `make install` once, then `.venv/bin/python -m app ...`\n"
        "(or `source .venv/bin/activate` first). From another folder: `/path/to/repo/.venv/bin/python -m app ...`\n"
        "with that folder as the working directory or PYTHONPATH=/path/to/repo."
    )

sys.exit(main())
