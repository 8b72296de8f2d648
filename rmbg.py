"""Entry point: `python rmbg.py` serves the web app on port 7860; `python rmbg.py --help` lists commands."""

import sys

from bgremover.cli import main

if __name__ == "__main__":
    sys.exit(main())
